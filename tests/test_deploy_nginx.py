"""The publishing reverse proxy for real: Debian's nginx runs ``deploy/nginx/mdm.conf`` (the file
an operator installs, placeholders filled in) in front of a server whose iOS, KES and web
listeners speak plain HTTP. The published name ``mdm.example.test`` has a certificate from a
"public" CA (root → intermediate → leaf) put into the ``ios`` and ``web`` slots with
``mdm certs set``; nginx serves those slot files. A simulated iPhone downloads its profile
through nginx and checks in presenting its certificate in the TLS handshake, which reaches the
service only as the RFC 9440 ``Client-Cert`` header nginx writes; an Android agent registers,
gets its certificate and syncs through nginx the same way."""

from __future__ import annotations

import plistlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kes_support
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from engines import ON_POSTGRES
from enroll_support import APNS_TOML
from ios_support import Phone, new_phone
from nginx_support import SITE, Nginx, nginx_binary, placeholders, render, run_nginx
from pki_support import Issuer, cli, key_pem, make_ca, make_leaf, p12, pem
from ports import free_ports

from mdm.config import CONFIG_FILE, Config
from mdm.config_sections import load as load_config
from mdm.db.engine import Database
from mdm.pki import services as pki_services
from mdm.server.runtime import Server
from mdm.sim.device import SimulatedDevice
from mdm.testing import make_data_dir

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="end to end through nginx: runs under SQLite")

PUBLIC = "mdm.example.test"
PASSWORD = "published-secret"


# ---- the published name: a public CA, its certificate in the slots, the name resolving -------
@pytest.fixture(scope="module")
def public_ca() -> tuple[Issuer, Issuer, Issuer]:
    root = make_ca("Example Public Root")
    intermediate = make_ca("Example Public TLS CA", root)
    leaf = make_leaf(intermediate, PUBLIC, sans=[PUBLIC])
    return root, intermediate, leaf


@pytest.fixture
def proxy_ports() -> tuple[int, int, int]:
    ios, kes, web = free_ports(3)
    return ios, kes, web


@pytest.fixture
async def config(
    tmp_path: Path,
    pki_template: Path,
    database_url: str,
    proxy_ports: tuple[int, int, int],
    public_ca: tuple[Issuer, Issuer, Issuer],
) -> Config:
    """The service as deploy/README.md sets it up behind nginx: hostname = the published name,
    iOS and KES listeners in plain mode, nginx (127.0.0.1) a trusted proxy of iOS, KES and web,
    the public URLs at nginx's ports, the published certificate in the ios and web slots."""
    ios, kes, web = proxy_ports
    origin = f"https://{PUBLIC}"
    extra = APNS_TOML + (
        "[enroll]\n"
        f'server_url = "{origin}:{ios}/mdm/server"\n'
        f'checkin_url = "{origin}:{ios}/mdm/checkin"\n'
        f'scep_url = "{origin}:{ios}/scep"\n'
        f'link_base_url = "{origin}:{web}"\n'
        f'kes_host = "{PUBLIC}"\n'
        f"kes_port = {kes}\n"
    )
    data = tmp_path / "data"
    make_data_dir(data, pki_template, database_url, extra)
    toml = data / CONFIG_FILE
    text = toml.read_text().replace('hostname = "localhost"', f'hostname = "{PUBLIC}"')
    text = text.replace('trusted_proxies = ["127.0.0.2/32"]', 'trusted_proxies = ["127.0.0.1/32"]')
    text = text.replace("[listeners.ios]\n", '[listeners.ios]\nmode = "plain"\n')
    kes = '[listeners.kes]\nmode = "plain"\ntrusted_proxies = ["127.0.0.1/32"]\n'
    text = text.replace("[listeners.kes]\n", kes)
    toml.write_text(text)
    root, intermediate, leaf = public_ca
    container = tmp_path / "published.p12"
    container.write_bytes(p12(leaf, [intermediate.cert, root.cert], PASSWORD))
    for slot in ("ios", "web"):
        result = await cli("certs", "set", "--data-dir", str(data), "-t", slot, "-i", str(container),
                           "-p", PASSWORD, "--no-reload")
        assert result.code == 0, result.err
    return load_config(data, env={})


@pytest.fixture
def resolve_public_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mdm.example.test`` resolves to 127.0.0.1 in this process (as DNS would in production), so
    clients connect with that name as SNI and Host and verify the certificate against it."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # anyio passes the name IDNA-encoded, as bytes.
        name = host.decode() if isinstance(host, bytes) else host
        return real("127.0.0.1" if name == PUBLIC else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def nginx(
    server: Server,
    config: Config,
    proxy_ports: tuple[int, int, int],
    tmp_path: Path,
    resolve_public_name: None,
) -> Iterator[Nginx]:
    bound = {(b.listener, b.tls): port for b, port in server.bound}
    upstreams = {
        "ios": f"127.0.0.1:{bound['ios', False]}",
        "kes": f"127.0.0.1:{bound['kes', False]}",
        "web": f"127.0.0.1:{bound['web', False]}",
    }
    # nginx serves the slot files `mdm certs set` wrote: the leaf followed by its chain.
    with run_nginx(
        tmp_path / "nginx",
        ports=proxy_ports,
        upstreams=upstreams,
        public_name=PUBLIC,
        cert=config.certs_dir / "ios.pem",
        key=config.certs_dir / "ios.key",
    ) as proxy:
        yield proxy


def _trust(root: x509.Certificate, identity: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=root.public_bytes(serialization.Encoding.PEM).decode())
    if identity is not None:
        ctx.load_cert_chain(*identity)
    return ctx


def _identity_files(phone: Phone, directory: Path) -> tuple[Path, Path]:
    cert, key = directory / f"{phone.udid}.pem", directory / f"{phone.udid}.key"
    cert.write_bytes(pem(phone.cert))
    key.write_bytes(key_pem(phone.key))
    return cert, key


def _refusal(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()["error"]
    assert body["code"] == "identity_rejected"
    return str(body["message"])


# ---- the file itself -------------------------------------------------------------------------
def test_every_placeholder_is_declared_and_rendered() -> None:
    text = SITE.read_text()
    names = placeholders(text)
    assert {"MDM_PUBLIC_NAME", "MDM_TLS_CERT", "MDM_TLS_KEY", "MDM_UPSTREAM_IOS"} <= names
    rendered = render({name: f"value-of-{name}" for name in names})
    assert "${" not in rendered
    # The device can never bring its own Client-Cert: every proxied location sets it.
    assert rendered.count("proxy_pass ") == rendered.count("proxy_set_header Client-Cert ") == 3
    nginx_binary()


# ---- enrollment and check-in through nginx ---------------------------------------------------
async def test_enroll_and_check_in_through_nginx(
    nginx: Nginx, api: httpx.AsyncClient, public_ca: tuple[Issuer, Issuer, Issuer]
) -> None:
    root, _intermediate, leaf = public_ca
    response = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice"})
    assert response.status_code == 201, response.text
    link = response.json()["url"]
    assert link.startswith(f"https://{PUBLIC}:{nginx.web_port}/e/")

    # The device trusts the public root only (its system store); the profile brings the
    # service's own root for the identity it carries.
    device = SimulatedDevice(mode="mtls", trusted_roots=[root.cert])
    async with device:
        profile = await device.enroll(link)
        assert profile.signed.trusted and profile.signed.signer == leaf.cert
        assert profile.mdm.server_url == f"https://{PUBLIC}:{nginx.ios_port}/mdm/server"
        assert profile.mdm.check_in_url == f"https://{PUBLIC}:{nginx.ios_port}/mdm/checkin"
        # No Mdm-Signature: the only identity the service can see is the TLS client certificate,
        # and that only as the Client-Cert header nginx writes.
        assert device.transport is not None
        device.transport.sign_always = False
        await device.check_in()

        devices = (await api.get("/api/v1/devices", params={"protocol": "ios"})).json()["items"]
        (record,) = [d for d in devices if d["identifier"] == device.udid]
        sent = await api.post(f"/api/v1/devices/{record['id']}/commands", json={"type": "Block", "args": {}})
        assert sent.status_code == 201, sent.text
        result = await device.poll()
        assert result.statuses == [("DeviceLock", "Acknowledged")]
        command = (await api.get(f"/api/v1/commands/{sent.json()['guid']}")).json()
        assert command["status"] == "completed"
        detail = (await api.get(f"/api/v1/devices/{record['id']}")).json()
        assert device.identity is not None and detail["cert_serial"] == device.identity.serial_hex

    log = (nginx.directory / "access.log").read_text()
    assert "PUT /mdm/checkin" in log and "PUT /mdm/server" in log and "GET /e/" in log


async def test_identity_only_from_the_handshake(
    nginx: Nginx, db: Database, server: Server, tmp_path: Path, public_ca: tuple[Issuer, Issuer, Issuer]
) -> None:
    root = public_ca[0].cert
    phone = await new_phone(db, pki_services.ca(server.ctx))
    base = f"https://{PUBLIC}:{nginx.ios_port}"
    async with httpx.AsyncClient(base_url=base, verify=_trust(root)) as anonymous:
        await phone.enroll(anonymous)  # Mdm-Signature passes through nginx untouched
        idle = plistlib.dumps({"UDID": phone.udid, "Status": "Idle"})
        headers = {"Content-Type": "application/x-apple-aspen-mdm"}
        # No certificate in the handshake and no signature: refused (400, never 401).
        message = _refusal(await anonymous.put("/mdm/server", content=idle, headers=headers))
        assert "no device identity" in message
        # The device's own Client-Cert header (the enrolled certificate) never reaches the service.
        forged = ":" + pem(phone.cert).decode().split("-----")[2].replace("\n", "") + ":"
        message = _refusal(
            await anonymous.put("/mdm/server", content=idle, headers={**headers, "Client-Cert": forged})
        )
        assert "no device identity" in message
    # The same request presenting the certificate in the handshake: the service believes nginx.
    identity = _identity_files(phone, tmp_path)
    async with httpx.AsyncClient(base_url=base, verify=_trust(root, identity)) as holder:
        assert (await holder.put("/mdm/server", content=idle, headers=headers)).status_code == 200
        # A header the device adds cannot replace the one nginx writes from the handshake.
        junk = {**headers, "Client-Cert": ":AAAA:", "Client-Cert-Chain": ":AAAA:"}
        assert (await holder.put("/mdm/server", content=idle, headers=junk)).status_code == 200
        # nginx refuses a body over ios.max_body_bytes (1 MiB) before the service reads it.
        huge = await holder.put("/mdm/server", content=b"x" * (1024 * 1024 + 1), headers=headers)
        assert huge.status_code == 413
    # A certificate from anyone else's CA reaches the service and is refused there.
    stranger = make_leaf(make_ca("Stranger CA"), "stranger", eku=[])
    paths = tmp_path / "stranger.pem", tmp_path / "stranger.key"
    paths[0].write_bytes(pem(stranger.cert))
    paths[1].write_bytes(key_pem(stranger.key))
    async with httpx.AsyncClient(base_url=base, verify=_trust(root, paths)) as other:
        _refusal(await other.put("/mdm/server", content=idle, headers=headers))


# ---- KES: an Android agent through nginx --------------------------------------------------
async def test_android_agent_enrolls_and_syncs_through_nginx(
    nginx: Nginx, db: Database, tmp_path: Path, public_ca: tuple[Issuer, Issuer, Issuer]
) -> None:
    root = public_ca[0].cert
    base = f"https://{PUBLIC}:{nginx.kes_port}"
    enrollment = await kes_support.android_enrollment(db)
    key = kes_support.new_key()
    identifier = "a1b2c3d4e5f60718"
    async with httpx.AsyncClient(base_url=base, verify=_trust(root)) as one_way:
        answer = await one_way.post(
            "/kes/v1/register", json=kes_support.register_message(enrollment.token, identifier)
        )
        assert answer.status_code == 200, answer.text
        answer = await one_way.post(
            "/kes/v1/certificate",
            json=kes_support.certificate_message(enrollment.token, identifier, kes_support.make_csr(key)),
        )
        assert answer.status_code == 200, answer.text
        issued = answer.json()
        # Without a certificate in the handshake a sync is refused, whatever header the agent sends.
        forged = ":" + issued["certificate"].split("-----")[2].replace("\n", "") + ":"
        sync = {"v": 1, "request_id": kes_support.request_id()}
        refused = await one_way.post("/kes/v1/sync", json=sync, headers={"Client-Cert": forged})
        assert refused.status_code in (401, 403), refused.text
    cert, key_file = tmp_path / "agent.pem", tmp_path / "agent.key"
    cert.write_text(issued["certificate"] + "".join(issued["chain"]))
    key_file.write_bytes(kes_support.key_pem(key))
    async with httpx.AsyncClient(base_url=base, verify=_trust(root, (cert, key_file))) as agent:
        answer = await agent.post("/kes/v1/sync", json={"v": 1, "request_id": kes_support.request_id()})
        assert answer.status_code == 200, answer.text
