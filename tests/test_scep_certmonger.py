"""Interoperability: Debian's certmonger (a SCEP client we did not write, its own process) enrolls
against the real iOS listener, with AES/SHA-256 and with 3DES/SHA-1.

The listener runs in plain-HTTP mode (the reverse-proxy deployment): certmonger's scep-submit sends
PKIOperation without the CA file it was given (-R is used only for GetCACaps/GetCACert), so over
HTTPS it can only reach servers whose CA is in the system trust store. SCEP protects its messages
itself (signed and enveloped), which is why classic clients speak it over HTTP. It also sends
PKIOperation by GET, so this covers the GET path with a real client.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from scep_tools import certmonger
from scep_tools.support import (
    certificate_count,
    challenge_used,
    make_challenge,
    make_user,
    record_of,
    scep_url,
)

from mdm.config import Config
from mdm.server.runtime import Server

if not certmonger.available():
    if os.environ.get("CI"):
        raise RuntimeError("certmonger is not installed; .ci/run installs it (apt-get install certmonger)")
    pytest.skip("certmonger is not installed (apt-get install certmonger)", allow_module_level=True)


@pytest.fixture
def config(config: Config) -> Config:
    config.listeners.ios.mode = "plain"
    return config


def _verify_chain(cert: x509.Certificate, config: Config) -> None:
    issuing = x509.load_pem_x509_certificate((config.ca_dir / "issuing.pem").read_bytes())
    root = x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())
    cert.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(root)


@pytest.mark.parametrize(
    ("cipher", "digest", "expect"),
    [(None, None, ("sha256", "aes")), ("DES3", "SHA1", ("sha1", "3des"))],
    ids=["aes-sha256", "3des-sha1"],
)
async def test_certmonger_enrolls(
    server: Server,
    config: Config,
    db,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    cipher: str | None,
    digest: str | None,
    expect: tuple[str, str],
) -> None:
    caplog.set_level(logging.INFO, logger="mdm.scep")
    user_id = await make_user(db, "bob")
    challenge = await make_challenge(db, user_id=user_id)
    result = await certmonger.enroll(
        tmp_path / "certmonger",
        scep_url(server, tls=False),
        challenge,
        "certmonger-device",
        ca_file=config.ca_dir / "root.pem",
        cipher=cipher,
        digest=digest,
    )
    assert result.status == "MONITORING", result.output
    cert = x509.load_pem_x509_certificate(result.certificate.read_bytes())
    key = serialization.load_pem_private_key(result.key.read_bytes(), password=None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    _verify_chain(cert, config)
    record = await record_of(db, cert)
    assert record is not None and record.user_id == user_id and record.type == "mobile"
    assert "CN=certmonger-device" in record.subject
    assert await challenge_used(db)
    assert await certificate_count(db) == 1
    successes = [
        r.getMessage() for r in caplog.records if r.name == "mdm.scep" and ": SUCCESS" in r.getMessage()
    ]
    assert len(successes) == 1, successes
    digest_seen, cipher_seen = expect
    assert f"({digest_seen}, {cipher_seen}" in successes[0], successes[0]


async def test_certmonger_wrong_challenge_is_rejected(
    server: Server, config: Config, db, tmp_path: Path
) -> None:
    await make_challenge(db)
    result = await certmonger.enroll(
        tmp_path / "certmonger",
        scep_url(server, tls=False),
        "f" * 32,
        "certmonger-device",
        ca_file=config.ca_dir / "root.pem",
    )
    assert result.status != "MONITORING", result.output
    assert "challenge password is wrong" in result.output or "REJECTED" in result.status, result.output
    assert await certificate_count(db) == 0
    assert not await challenge_used(db)
