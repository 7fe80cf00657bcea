"""The ``adcs`` source against the AD CS contract fake (mdm.devfakes.adcs) over real TLS:
Negotiate with the real MIT KDC of the tests, NTLM and Basic; issued, pending then polled,
denied with the CA's message, German pages, an Enrollment Agent the CA does not trust, and a CA
that is down, slow or answers IIS's 500 page. Also the configuration's refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.adcs import agent
from mdm.adcs.source import AdcsSource, adcs_source
from mdm.cli.main import main
from mdm.config import Config, ConfigError
from mdm.devfakes.adcs import AdcsFake
from mdm.pki.source_errors import CertificateDenied, CertificatePending, SourceUnavailable
from tests.adcs_support import secret_file, user_request, write_config
from tests.engines import ENGINE_FREE
from tests.kdc import Kdc, kdc_fixture  # noqa: F401  (the "kdc" fixture)
from tests.ports import free_port

pytestmark = ENGINE_FREE
PASS = "agent passphrase"


@pytest.fixture(scope="module")
def fake(kdc: Kdc) -> Iterator[AdcsFake]:
    with AdcsFake(keytab=kdc.service_keytab, auth=("negotiate", "ntlm", "basic"),
                  basic_users={"CORP\\mdm-svc": "basic-pw"}, ntlm_users={"mdm-svc": "ntlm-pw"},
                  port=free_port()) as server:
        yield server


@pytest.fixture(autouse=True)
def _healthy(fake: AdcsFake) -> Iterator[None]:
    yield
    fake.slow, fake.error_page, fake.language = 0.0, False, "en"
    fake.start()


def _config(tmp_path: Path, fake: AdcsFake, kdc: Kdc, **override: Any) -> Config:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in fake.pki.chain))
    settings: dict[str, Any] = {
        "url": fake.url, "auth": "negotiate", "principal": kdc.svc_principal, "keytab": str(kdc.svc_keytab),
        "ca_bundle": str(fake.ca_file), "ca_chain_file": str(chain), "default_template": "MdmUser",
        "requester_domain": "CORP", "timeout_seconds": 5.0,
        "agent_passphrase_file": str(secret_file(tmp_path / "agent.pass", PASS)),
    }
    settings.update(override)
    return write_config(tmp_path / "data", **{k: v for k, v in settings.items() if v is not None})


def _source(config: Config, fake: AdcsFake, *, trusted: bool = True) -> AdcsSource:
    ea = fake.pki.enrollment_agent(issuer=None if trusted else fake.pki.root)
    agent.store(config.data_path, agent.AgentIdentity(ea.cert, ea.key), PASS.encode())  # type: ignore[arg-type]
    source = adcs_source(config, None)  # type: ignore[arg-type]  # the factory does not use the CA
    assert isinstance(source, AdcsSource)
    return source


async def _sign(source: AdcsSource, user: str = "alice", template: str | None = None,
                ) -> tuple[x509.Certificate, list[x509.Certificate]]:
    request, key = user_request(user, template)
    cert, chain = await source.sign(request, key.public_key())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    return cert, chain


async def test_negotiate_on_behalf_of_issues_from_the_domain_ca(tmp_path: Path, fake: AdcsFake,
                                                                kdc: Kdc) -> None:
    source = _source(_config(tmp_path, fake, kdc), fake)
    try:
        cert, chain = await _sign(source, "alice")
    finally:
        await source.client.aclose()
    assert cert.subject.rfc4514_string() == "CN=alice"
    assert chain == fake.pki.chain  # issuer first, the leaf left out
    row = fake.requests[-1]
    assert row.caller == kdc.svc_principal and row.on_behalf_of == "CORP\\alice"
    assert row.template == "MdmUser" and row.agent is not None
    # only the issuing CA: the root also vouches for the CA web server, which must not authenticate
    assert source.trust_anchors() == [fake.pki.issuing.cert]
    assert (tmp_path / "data" / "adcs" / "krb" / "krb5cc").is_file()


@pytest.mark.parametrize(("auth", "user", "password"), [("ntlm", "CORP\\mdm-svc", "ntlm-pw"),
                                                        ("basic", "CORP\\mdm-svc", "basic-pw")])
async def test_ntlm_and_basic_logins(tmp_path: Path, fake: AdcsFake, kdc: Kdc, auth: str, user: str,
                                     password: str) -> None:
    config = _config(tmp_path, fake, kdc, auth=auth, principal=None, keytab=None, username=user,
                     password_file=str(secret_file(tmp_path / "pw", password)))
    source = _source(config, fake)
    try:
        cert, _ = await _sign(source, "bob")
    finally:
        await source.client.aclose()
    assert cert.subject.rfc4514_string() == "CN=bob"


async def test_a_wrong_password_is_a_precise_401(tmp_path: Path, fake: AdcsFake, kdc: Kdc) -> None:
    config = _config(tmp_path, fake, kdc, auth="basic", principal=None, keytab=None, username="CORP\\mdm-svc",
                     password_file=str(secret_file(tmp_path / "pw", "wrong-secret")))
    source = _source(config, fake)
    try:
        with pytest.raises(SourceUnavailable) as info:
            await _sign(source)
    finally:
        await source.client.aclose()
    assert "HTTP 401" in info.value.message and "wrong-secret" not in info.value.message


@pytest.mark.parametrize("language", ["en", "de"])
async def test_pending_then_polled_after_approval(tmp_path: Path, fake: AdcsFake, kdc: Kdc,
                                                 language: str) -> None:
    fake.language = language  # type: ignore[assignment]
    source = _source(_config(tmp_path, fake, kdc), fake)
    try:
        request, key = user_request("carol", "PendingUser")
        with pytest.raises(CertificatePending) as info:
            await source.sign(request, key.public_key())
        req_id = info.value.request_id
        with pytest.raises(CertificatePending):
            await source.poll(req_id)
        fake.approve(int(req_id))
        cert, chain = await source.poll(req_id)
    finally:
        await source.client.aclose()
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert chain == fake.pki.chain


@pytest.mark.parametrize("language", ["en", "de"])
async def test_denied_with_the_cas_message(tmp_path: Path, fake: AdcsFake, kdc: Kdc, language: str) -> None:
    fake.language = language  # type: ignore[assignment]
    source = _source(_config(tmp_path, fake, kdc), fake)
    try:
        with pytest.raises(CertificateDenied) as info:
            await _sign(source, template="DeniedUser")
        with pytest.raises(CertificateDenied, match="not supported by this CA"):
            await _sign(source, template="NoSuchTemplate")
    finally:
        await source.client.aclose()
    assert info.value.ca_message == " ".join(fake.templates["DeniedUser"].message.split())
    assert info.value.request_id == str(fake.requests[-2].id)


async def test_an_agent_the_ca_does_not_trust_is_denied(tmp_path: Path, fake: AdcsFake, kdc: Kdc) -> None:
    source = _source(_config(tmp_path, fake, kdc), fake, trusted=False)
    try:
        with pytest.raises(CertificateDenied) as info:
            await _sign(source)
    finally:
        await source.client.aclose()
    assert info.value.ca_message == " ".join(fake.requests[-1].message.split())


async def test_a_ca_that_is_down_slow_or_broken(tmp_path: Path, fake: AdcsFake, kdc: Kdc) -> None:
    source = _source(_config(tmp_path, fake, kdc, timeout_seconds=0.3), fake)
    try:
        fake.error_page = True
        with pytest.raises(SourceUnavailable, match=r"HTTP 500 .*\(500 - Internal server error\.\)"):
            await _sign(source)
        fake.error_page = False
        fake.slow = 1.0
        with pytest.raises(SourceUnavailable, match=r"no answer from .* within 0\.3 s"):
            await _sign(source)
        fake.slow = 0.0
        fake.stop()
        with pytest.raises(SourceUnavailable, match="cannot connect to"):
            await _sign(source)
        fake.start()
        await _sign(source)  # and back
    finally:
        await source.client.aclose()


async def test_without_an_agent_or_a_template(tmp_path: Path, fake: AdcsFake, kdc: Kdc) -> None:
    config = _config(tmp_path, fake, kdc, default_template="")
    source = adcs_source(config, None)  # type: ignore[arg-type]
    assert isinstance(source, AdcsSource)
    before = len(fake.requests)
    try:
        with pytest.raises(SourceUnavailable, match="default_template"):
            await _sign(source)
        with pytest.raises(SourceUnavailable, match="mdm adcs agent import"):
            await _sign(source, template="MdmUser")
    finally:
        await source.client.aclose()
    assert len(fake.requests) == before  # nothing was submitted


def test_cli_check(tmp_path: Path, fake: AdcsFake, kdc: Kdc, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, fake, kdc)
    assert main(["adcs", "check", "--data-dir", str(config.data_path)]) == 0
    assert "OK:" in capsys.readouterr().out
    fake.stop()
    assert main(["adcs", "check", "--data-dir", str(config.data_path)]) == 1
    assert "cannot connect" in capsys.readouterr().err


@pytest.mark.parametrize(("settings", "message"), [
    ({"auth": "basic", "url": "http://ca.example.com/certsrv", "username": "u", "password_file": "p"},
     "url must be https"),
    ({"ca_chain_file": ""}, "needs ca_chain_file"),
    ({"principal": ""}, "needs principal"),
    ({"keytab": "", "password_file": ""}, "exactly one of keytab and password_file"),
    ({"requester_domain": ""}, "requester_domain"),
])
def test_configuration_refusals(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    base = {"url": "https://ca.example.com/certsrv", "principal": "svc@EXAMPLE.COM", "keytab": "k",
            "ca_chain_file": "chain.pem", "requester_domain": "CORP"}
    with pytest.raises(ConfigError, match=message):
        write_config(tmp_path, **{**base, **settings})


def test_an_unconfigured_source_is_a_config_error_at_first_use(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with pytest.raises(ConfigError, match=r"set \[adcs\] url"):
        adcs_source(config, None)  # type: ignore[arg-type]


def test_only_the_issuing_cas_of_the_chain_become_anchors(fake: AdcsFake) -> None:
    from mdm.adcs.source import issuing_cas

    issuing, root = fake.pki.issuing.cert, fake.pki.root.cert
    assert issuing_cas([root, issuing]) == [issuing]
    assert issuing_cas([issuing, root]) == [issuing]
    assert issuing_cas([root]) == [root]  # a root that issues the devices' certificates itself
