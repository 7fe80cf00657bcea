"""End to end with the enterprise PKI (issue 16 item 2): a full server whose ``mobile`` issuance
rule has the source ``adcs``, pointed at the AD CS contract fake over real TLS with Negotiate
against the real MIT KDC, the Enrollment Agent imported with ``mdm adcs agent import``. Then:

(a) an iOS enrollment profile carries a PKCS#12 identity from the fake's CA and the simulated
    iPhone checks in with it (Mdm-Signature and mutual TLS);
(b) ``enroll.identity = "scep"``: the iPhone enrolls through the server's SCEP, the certificate
    comes from the fake, and it checks in;
(c) an Android (KES) agent gets its user certificate from the fake and syncs over mutual TLS.

Every certificate is requested on behalf of the enrolling user (the CA's log shows the service
principal as caller and ``CORP\\alice`` as the subject user) and recorded like internal ones.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from enroll_support import APNS_TOML

from mdm.cli.main import main
from mdm.config import Config
from mdm.devfakes.adcs import AdcsFake
from mdm.server.runtime import Server
from mdm.sim.device import SimulatedDevice
from mdm.sim.facts import HardwareFacts
from mdm.sim.kes import package as kes_package
from mdm.sim.kes.agent import KesAgent
from mdm.sim.kes.facts import AndroidFacts
from tests.conftest import client_ssl_context, listener_url
from tests.engines import ON_POSTGRES
from tests.kdc import Kdc, kdc_fixture  # noqa: F401  (the "kdc" fixture)

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="big end-to-end flow: SQLite only")

TEMPLATE = "MdmUser"
P12_PASSWORD = "ea-p12-password"


@pytest.fixture(scope="module")
def adcs(kdc: Kdc) -> Iterator[AdcsFake]:
    with AdcsFake(keytab=kdc.service_keytab, auth=("negotiate",),
                  directory={"alice", "bob", "carol", "dave"}) as fake:
        yield fake


def _adcs_toml(tmp_path: Path, fake: AdcsFake, kdc: Kdc) -> str:
    chain = tmp_path / "domain-ca.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in fake.pki.chain))
    passphrase = tmp_path / "agent.pass"
    passphrase.write_text("agent key passphrase\n")
    passphrase.chmod(0o600)
    return (
        "\n[adcs]\n"
        f'url = "{fake.url}"\nauth = "negotiate"\n'
        f'principal = "{kdc.svc_principal}"\nkeytab = "{kdc.svc_keytab}"\n'
        f'ca_bundle = "{fake.ca_file}"\nca_chain_file = "{chain}"\n'
        f'default_template = "{TEMPLATE}"\nrequester_domain = "CORP"\ntimeout_seconds = 10\n'
        f'agent_passphrase_file = "{passphrase}"\n'
    )


@pytest.fixture
def extra_config(tmp_path: Path, adcs: AdcsFake, kdc: Kdc) -> str:
    return APNS_TOML + "\n[kes]\nmin_sync_spacing_seconds = 0\n" + _adcs_toml(tmp_path, adcs, kdc)


def _import_agent(config: Config, fake: AdcsFake, tmp_path: Path) -> None:
    """The operator's step: the EA certificate + key as a PKCS#12, imported with the CLI."""
    ea = fake.pki.enrollment_agent("mdm-enrollment-agent")
    p12 = tmp_path / "ea.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"ea", ea.key, ea.cert, None,  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(P12_PASSWORD.encode())))
    assert main(["adcs", "agent", "import", "--p12", str(p12), "--password", P12_PASSWORD,
                 "--data-dir", str(config.data_path)]) == 0


async def _use_adcs(api: httpx.AsyncClient, config: Config, fake: AdcsFake, tmp_path: Path) -> None:
    _import_agent(config, fake, tmp_path)
    r = await api.put("/api/v1/certificates/rules/mobile", json={"source": "adcs", "template": TEMPLATE})
    assert r.status_code == 200, r.text


def _from_the_domain_ca(cert: x509.Certificate, fake: AdcsFake) -> None:
    cert.verify_directly_issued_by(fake.pki.issuing.cert)


def _on_behalf_row(fake: AdcsFake, cert: x509.Certificate, kdc: Kdc, user: str = "alice") -> None:
    rows = [r for r in fake.requests if r.certificate is not None and r.certificate == cert]
    assert len(rows) == 1, [(r.id, r.status, r.message) for r in fake.requests]
    row = rows[0]
    assert row.caller == kdc.svc_principal and row.template == TEMPLATE
    assert row.on_behalf_of == f"CORP\\{user}" and row.agent is not None
    assert cert.subject.rfc4514_string() == f"CN={user}"


async def _recorded(api: httpx.AsyncClient, cert: x509.Certificate) -> dict[str, object]:
    r = await api.get(f"/api/v1/certificates/{cert.serial_number:x}")
    assert r.status_code == 200, r.text
    record: dict[str, object] = r.json()
    assert record["source"] == "adcs" and record["type"] == "mobile"
    return record


def _roots(config: Config) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())


async def _ios_device(api: httpx.AsyncClient, config: Config, mode: str, seed: int) -> SimulatedDevice:
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice"})
    assert r.status_code == 201, r.text
    device = SimulatedDevice(HardwareFacts.generate(random.Random(seed)), mode=mode,  # type: ignore[arg-type]
                             trusted_roots=_roots(config))
    try:
        await device.enroll(r.json()["url"])
        await device.check_in()
    except BaseException:
        await device.aclose()
        raise
    return device


async def _ios_round(api: httpx.AsyncClient, config: Config, adcs: AdcsFake, kdc: Kdc,
                     mode: str, seed: int, kind: str) -> None:
    async with await _ios_device(api, config, mode, seed) as device:
        assert device.profile is not None and device.profile.identity_kind == kind
        assert device.identity is not None
        cert = device.identity.certificate
        _from_the_domain_ca(cert, adcs)
        _on_behalf_row(adcs, cert, kdc)
        await _recorded(api, cert)
        listed = (await api.get("/api/v1/devices", params={"protocol": "ios"})).json()["items"]
        record = next(d for d in listed if d["identifier"] == device.udid)
        assert record["cert_serial"] == device.identity.serial_hex and record["user"] == "alice"
        assert (await device.poll()).commands == 0  # the check-in channel accepts the identity


@pytest.mark.parametrize("mode", ["signature", "mtls"])
async def test_ios_profile_pkcs12_from_the_domain_ca(server: Server, api: httpx.AsyncClient,
                                                     config: Config, adcs: AdcsFake, kdc: Kdc,
                                                     tmp_path: Path, mode: str) -> None:
    await _use_adcs(api, config, adcs, tmp_path)
    await _ios_round(api, config, adcs, kdc, mode, seed=21, kind="pkcs12")


class TestScep:
    @pytest.fixture
    def extra_config(self, tmp_path: Path, adcs: AdcsFake, kdc: Kdc) -> str:
        return APNS_TOML + '\n[enroll]\nidentity = "scep"\n' + _adcs_toml(tmp_path, adcs, kdc)

    async def test_ios_scep_identity_from_the_domain_ca(self, server: Server, api: httpx.AsyncClient,
                                                        config: Config, adcs: AdcsFake, kdc: Kdc,
                                                        tmp_path: Path) -> None:
        await _use_adcs(api, config, adcs, tmp_path)
        await _ios_round(api, config, adcs, kdc, "mtls", seed=22, kind="scep")


async def test_android_user_certificate_from_the_domain_ca(server: Server, api: httpx.AsyncClient,
                                                           config: Config, adcs: AdcsFake, kdc: Kdc,
                                                           tmp_path: Path) -> None:
    await _use_adcs(api, config, adcs, tmp_path)
    r = await api.post("/api/v1/enrollments", json={"platform": "android", "user": "alice"})
    assert r.status_code == 201, r.text
    package = await kes_package.download(r.json()["url"], verify=client_ssl_context(config))
    assert package.port == urlsplit(listener_url(server, "kes")).port
    agent = KesAgent(package, AndroidFacts.generate(random.Random(23)), rng=random.Random(23),
                     host="127.0.0.1")
    try:
        await agent.enroll()
        assert agent.identity is not None and agent.device_id is not None
        cert = agent.identity.certificate
        _from_the_domain_ca(cert, adcs)
        _on_behalf_row(adcs, cert, kdc)
        await _recorded(api, cert)
        await agent.sync()  # mutual TLS with the domain CA's certificate
        record = (await api.get(f"/api/v1/devices/{agent.device_id}")).json()
        assert record["user"] == "alice" and record["cert_serial"] == f"{cert.serial_number:x}"
    finally:
        await agent.close()


async def _rule(api: httpx.AsyncClient, template: str) -> None:
    r = await api.put("/api/v1/certificates/rules/mobile", json={"source": "adcs", "template": template})
    assert r.status_code == 200, r.text


async def test_admin_issue_pending_approved_denied_and_down(server: Server, api: httpx.AsyncClient,
                                                            config: Config, adcs: AdcsFake, kdc: Kdc,
                                                            tmp_path: Path) -> None:
    """The administrator's path (``POST /api/v1/certificates``) through the wire fake: issued at
    once (PKCS#12 of a key generated here, chain = the domain CA's), held pending by the CA then
    issued after the CA manager approves, denied with the CA's message, and a CA that is down."""
    await _use_adcs(api, config, adcs, tmp_path)
    issue = {"type": "mobile", "p12_password": "pw", "create_user": True}
    r = await api.post("/api/v1/certificates", json={**issue, "user": "alice"})
    assert r.status_code == 201, r.text
    body = r.json()
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    _from_the_domain_ca(cert, adcs)
    _on_behalf_row(adcs, cert, kdc)
    assert x509.load_pem_x509_certificates(body["chain_pem"].encode())[0] == adcs.pki.issuing.cert
    key, in_p12, _ = pkcs12.load_key_and_certificates(base64.b64decode(body["pkcs12"]), b"pw")
    assert in_p12 == cert and key is not None
    await _recorded(api, cert)

    await _rule(api, "PendingUser")
    r = await api.post("/api/v1/certificates", json={**issue, "user": "bob"})
    assert r.status_code == 202, r.text
    request = r.json()["request"]
    assert request["status"] == "pending" and request["source"] == "adcs"
    ca_id = int(request["ca_request_id"])
    assert adcs.request(ca_id).on_behalf_of == "CORP\\bob"
    r = await api.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    adcs.approve(ca_id)
    r = await api.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert r.status_code == 200 and r.json()["status"] == "issued", r.text
    approved = adcs.request(ca_id).certificate
    assert approved is not None and f"{approved.serial_number:x}" == r.json()["serial"]
    assert (await _recorded(api, approved))["user"] == "bob"

    await _rule(api, "DeniedUser")
    r = await api.post("/api/v1/certificates", json={**issue, "user": "carol"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "certificate_denied", r.text
    assert "0x80094012" in r.json()["error"]["message"]

    await _rule(api, TEMPLATE)
    adcs.stop()
    try:
        r = await api.post("/api/v1/certificates", json={**issue, "user": "dave"})
    finally:
        adcs.start()
    assert r.status_code == 503 and r.json()["error"]["code"] == "certificate_source_unavailable", r.text
