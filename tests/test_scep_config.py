"""The [scep] section: static challenge, switching SCEP off; the challenge API; RA certificates."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from conftest import client_ssl_context
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from scep_tools.support import certificate_count, make_user, new_key, record_of, scep_url

from mdm.config import Config
from mdm.pki.ca import CertificateAuthority
from mdm.scep import client, ra
from mdm.scep.protocol import FailInfo
from mdm.server.runtime import Server


class TestStaticChallenge:
    @pytest.fixture
    def extra_config(self, tmp_path: Path) -> str:
        secret = tmp_path / "scep-secret"
        secret.write_text("shared-Secret-1\n")
        return f'[scep]\nstatic_challenge_file = "{secret}"\nvalidity_days = 30\n'

    async def test_static_challenge_is_reusable(self, server: Server, config: Config, db) -> None:
        for n in range(2):
            cert = await client.enroll(
                scep_url(server),
                "shared-Secret-1",
                f"kiosk-{n}",
                new_key(),
                ssl_context=client_ssl_context(config),
            )
            record = await record_of(db, cert)
            assert record is not None and record.user_id is None
            days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
            assert 29 <= days <= 31
        with pytest.raises(client.ScepError) as caught:
            await client.enroll(
                scep_url(server),
                "shared-Secret-2",
                "kiosk-x",
                new_key(),
                ssl_context=client_ssl_context(config),
            )
        assert caught.value.fail_info == FailInfo.BAD_REQUEST
        assert await certificate_count(db) == 2


class TestDisabled:
    @pytest.fixture
    def extra_config(self) -> str:
        return "[scep]\nenabled = false\n"

    async def test_no_scep_endpoint(self, server: Server, config: Config) -> None:
        async with httpx.AsyncClient(verify=client_ssl_context(config)) as http:
            r = await http.get(scep_url(server), params={"operation": "GetCACaps"})
        assert r.status_code == 404


async def test_challenge_api(server: Server, config: Config, db, api: httpx.AsyncClient) -> None:
    user_id = await make_user(db, "carol")
    r = await api.post(
        "/api/v1/scep/challenges", json={"user": "carol", "purpose": "manual", "ttl_seconds": 600}
    )
    assert r.status_code == 201, r.text
    challenge = r.json()["challenge"]
    assert len(challenge) == 32 and r.json()["expires_at"]
    cert = await client.enroll(
        scep_url(server), challenge, "carol-ipad", new_key(), ssl_context=client_ssl_context(config)
    )
    record = await record_of(db, cert)
    assert record is not None and record.user_id == user_id
    assert (await api.post("/api/v1/scep/challenges", json={"user": "nobody"})).status_code == 404
    assert (await api.post("/api/v1/scep/challenges", json={"ttl_seconds": 5})).status_code == 400
    assert (
        "challenge"
        in (await api.get("/api/openapi.json")).json()["paths"]["/api/v1/scep/challenges"]["post"]["summary"]
    )


def test_ra_certificates_persist_and_follow_the_ca(tmp_path: Path, pki_template: Path) -> None:
    ca = CertificateAuthority.load(pki_template / "ca")
    first = ra.ensure(tmp_path, ca, b"pass phrase", "mdm.example.com")
    for name in ("ra-sign.key", "ra-enc.key"):
        path = tmp_path / "scep" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert b"ENCRYPTED" in path.read_bytes()
    again = ra.ensure(tmp_path, ca, b"pass phrase", "mdm.example.com")
    assert again.sign_cert == first.sign_cert and again.enc_cert == first.enc_cert
    for cert in (first.sign_cert, first.enc_cert):
        cert.verify_directly_issued_by(ca.issuing)
        assert isinstance(cert.public_key(), type(first.enc_key.public_key()))
    # A new issuing CA (e.g. after `mdm certs import-ca`): the RA certificates are re-issued under it.
    other = CertificateAuthority.create(tmp_path / "other-ca", rsa_bits=2048)
    moved = ra.ensure(tmp_path, other, b"pass phrase", "mdm.example.com")
    assert moved.sign_cert != first.sign_cert
    moved.sign_cert.verify_directly_issued_by(other.issuing)
    assert moved.getcacert[2:] == [other.issuing, other.root]
    # An unreadable key file is replaced rather than crashing start-up.
    (tmp_path / "scep" / "ra-enc.key").write_text("garbage")
    fixed = ra.ensure(tmp_path, other, b"pass phrase", "mdm.example.com")
    assert fixed.enc_cert != moved.enc_cert
    assert fixed.enc_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == fixed.enc_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert isinstance(
        x509.load_pem_x509_certificate((tmp_path / "scep" / "ra-enc.pem").read_bytes()), x509.Certificate
    )
