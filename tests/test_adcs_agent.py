"""Enroll on behalf of: the CMS that wraps the PKCS#10 (its structure with asn1crypto, its
signature with ``openssl cms -verify``) and the Enrollment Agent store (encrypted, 0600, checked
on import and on load), through the functions and ``mdm adcs agent import/show``."""

from __future__ import annotations

import logging
import stat
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from mdm.adcs import agent
from mdm.adcs.cms import ENROLLMENT_NAME_VALUE_PAIR, EnrollmentNameValuePair, requester_name, wrap_on_behalf
from mdm.cli.main import main
from tests.adcs_support import agent_cert, secret_file, user_request, write_config
from tests.engines import ENGINE_FREE

pytestmark = ENGINE_FREE
PASS = b"agent passphrase"


def test_the_cms_carries_the_csr_and_the_requester_name_and_verifies(tmp_path: Path) -> None:
    cert, key = agent_cert()
    request, _ = user_request()
    assert request.csr is not None
    csr_der = request.csr.public_bytes(serialization.Encoding.DER)
    der = wrap_on_behalf(csr_der, requester_name("CORP", "alice@corp.example.com"), cert, key)

    info = asn1_cms.ContentInfo.load(der)
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    assert signed["encap_content_info"]["content"].native == csr_der
    ea_der = cert.public_bytes(serialization.Encoding.DER)
    assert [c.chosen.dump() for c in signed["certificates"]] == [ea_der]
    attrs = {a["type"].dotted: a["values"][0] for a in signed["signer_infos"][0]["signed_attrs"]}
    assert set(attrs) == {"1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.2.840.113549.1.9.5",
                          ENROLLMENT_NAME_VALUE_PAIR}
    pair = EnrollmentNameValuePair.load(attrs[ENROLLMENT_NAME_VALUE_PAIR].dump())
    assert pair.native == {"name": "requestername", "value": "CORP\\alice"}

    (tmp_path / "req.p7").write_bytes(der)
    done = subprocess.run(["openssl", "cms", "-verify", "-noverify", "-inform", "DER", "-in",
                           str(tmp_path / "req.p7"), "-out", str(tmp_path / "out")], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == csr_der


def test_a_requester_name_needs_a_domain_and_a_user() -> None:
    assert requester_name("CORP", "bob") == "CORP\\bob"
    for domain, user in (("", "bob"), ("CORP", ""), ("CORP", "OTHER\\bob")):
        with pytest.raises(ValueError):
            requester_name(domain, user)


def test_the_agent_is_stored_encrypted_0600_and_loads_back(tmp_path: Path) -> None:
    cert, key = agent_cert()
    folder = agent.store(tmp_path, agent.AgentIdentity(cert, key), PASS)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (agent.CERT_FILE, agent.KEY_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in (folder / agent.KEY_FILE).read_bytes()
    loaded = agent.load(tmp_path, PASS)
    assert loaded.certificate == cert
    with pytest.raises(agent.AgentError, match="wrong passphrase"):
        agent.load(tmp_path, b"not it")


def test_the_key_is_never_stored_without_a_passphrase(tmp_path: Path) -> None:
    cert, key = agent_cert()
    with pytest.raises(agent.AgentError, match="without a passphrase"):
        agent.store(tmp_path, agent.AgentIdentity(cert, key), None)
    assert not (tmp_path / "adcs").exists()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: agent_cert(days=-1), "expired on"),
    (lambda: agent_cert(eku=False), "lacks the Certificate Request Agent EKU"),
    (lambda: (agent_cert()[0], ec.generate_private_key(ec.SECP256R1())), "does not belong"),
])
def test_unfit_agents_are_refused_on_import(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    cert, key = make()
    with pytest.raises(agent.AgentError, match=message):
        agent.store(tmp_path, agent.AgentIdentity(cert, key), PASS)


def test_an_agent_that_expired_since_import_is_refused_on_load(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    cert, key = agent_cert(days=2)
    agent.store(tmp_path, agent.AgentIdentity(cert, key), PASS)
    with pytest.raises(agent.AgentError, match="expired on"):
        agent.load(tmp_path, PASS, now=datetime.now(UTC) + timedelta(days=3))


def test_an_agent_expiring_within_30_days_is_warned_about(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    cert, key = agent_cert(days=10)
    agent.store(tmp_path, agent.AgentIdentity(cert, key), PASS)
    with caplog.at_level(logging.WARNING, "mdm.adcs.agent"):
        agent.load(tmp_path, PASS)
    assert "expires on" in caplog.text and PASS.decode() not in caplog.text


def test_cli_imports_a_pkcs12_and_shows_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    passfile = secret_file(tmp_path / "agent.pass", PASS.decode())
    write_config(data, agent_passphrase_file=str(passfile))
    cert, key = agent_cert()
    p12 = tmp_path / "ea.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"ea", key, cert, None, serialization.BestAvailableEncryption(b"p12pw")))

    assert main(["adcs", "agent", "import", "--p12", str(p12), "--password", "wrong",
                 "--data-dir", str(data)]) == 2
    assert "wrong password" in capsys.readouterr().err
    assert main(["adcs", "agent", "import", "--p12", str(p12), "--password", "p12pw",
                 "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "CN=mdm-ea" in out and "p12pw" not in out and PASS.decode() not in out
    assert main(["adcs", "agent", "show", "--data-dir", str(data)]) == 0
    assert "Certificate Request Agent" in capsys.readouterr().out


def test_cli_refuses_an_agent_without_the_eku(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_config(data, agent_passphrase_file=str(secret_file(tmp_path / "agent.pass", "x")))
    cert, key = agent_cert(eku=False)
    p12 = tmp_path / "ea.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"ea", key, cert, None,
                                                          serialization.NoEncryption()))
    assert main(["adcs", "agent", "import", "--p12", str(p12), "--data-dir", str(data)]) == 2
    assert "lacks the Certificate Request Agent EKU" in capsys.readouterr().err
    assert main(["adcs", "agent", "show", "--data-dir", str(data)]) == 1
    assert "mdm adcs agent import" in capsys.readouterr().err
