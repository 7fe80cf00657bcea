"""The KES listener in plain mode behind a publishing proxy with kcd = true (real MIT KDC): the
device certificate in RFC 9440 Client-Cert only from the trusted proxy (127.0.0.2), and the
user's Negotiate ticket, which must name the device's owner."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from conftest import listener_url
from cryptography.hazmat.primitives import serialization
from kcd_support import initiate, login, verify_mutual

from mdm.config import Config
from mdm.db.engine import Database
from mdm.server.runtime import Server
from tests.kdc import Kdc, kdc_fixture, krb5_ccache_fixture  # noqa: F401  (fixtures)
from tests.kes_support import EnrolledDevice, enroll_device, error_code, user

UNENROLL = {"v": 1, "request_id": "0b7e6c1c-5d1f-4c57-9a3e-2f1f0c1e9d11"}


@pytest.fixture
def kcd_on() -> bool:
    return True


@pytest.fixture
def config(config: Config, kdc: Kdc, kcd_on: bool) -> Config:
    config.listeners.kes.mode = "plain"
    config.listeners.kes.trusted_proxies = ["127.0.0.2/32"]
    config.listeners.kes.kcd = kcd_on
    config.kerberos.keytab = str(kdc.service_keytab)
    config.kerberos.service_principal = kdc.service_principal
    config.kerberos.realms = [kdc.realm]
    return config


def _forwarded(device: EnrolledDevice) -> dict[str, str]:
    der = device.cert.public_bytes(serialization.Encoding.DER)
    return {"Client-Cert": ":" + base64.b64encode(der).decode() + ":"}


async def test_client_cert_and_negotiate_from_the_proxy_only(
    server: Server, config: Config, db: Database, kdc: Kdc, krb5_ccache: Path
) -> None:
    device = await enroll_device(server, config, db, user_name="alice")
    await user(db, "bob")
    url = listener_url(server, "kes")
    login(kdc, "alice", krb5_ccache)
    async with httpx.AsyncClient(base_url=url) as direct:  # 127.0.0.1: not a trusted proxy
        _, negotiate = initiate(kdc.service_principal)
        answer = await direct.post(
            "/kes/v1/unenroll", json=UNENROLL, headers={**_forwarded(device), "Authorization": negotiate}
        )
        assert (answer.status_code, error_code(answer)) == (403, "negotiate_rejected")
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=url, transport=transport) as proxy:
        missing = await proxy.post("/kes/v1/unenroll", json=UNENROLL, headers=_forwarded(device))
        assert (missing.status_code, error_code(missing)) == (401, "negotiate_required")
        assert missing.headers["WWW-Authenticate"] == "Negotiate"
        login(kdc, "bob", krb5_ccache)
        _, bob = initiate(kdc.service_principal)
        other = await proxy.post(
            "/kes/v1/unenroll", json=UNENROLL, headers={**_forwarded(device), "Authorization": bob}
        )
        assert (other.status_code, error_code(other)) == (403, "negotiate_rejected")
        login(kdc, "alice", krb5_ccache)
        _, alice = initiate(kdc.service_principal)
        bad_cert = await proxy.post(
            "/kes/v1/unenroll",
            json=UNENROLL,
            headers={"Client-Cert": ":bm90IGEgY2VydA==:", "Authorization": alice},
        )
        assert (bad_cert.status_code, error_code(bad_cert)) == (403, "certificate_untrusted")
        context, alice = initiate(kdc.service_principal)
        done = await proxy.post(
            "/kes/v1/unenroll", json=UNENROLL, headers={**_forwarded(device), "Authorization": alice}
        )
        assert done.status_code == 200, done.text
        verify_mutual(context, done.headers["WWW-Authenticate"])  # the answer authenticates us
        assert "WWW-Authenticate" not in other.headers  # a refusal completes nothing


@pytest.mark.parametrize("kcd_on", [False])
async def test_client_cert_from_proxy_vs_non_proxy(server: Server, config: Config, db: Database) -> None:
    device = await enroll_device(server, config, db, user_name="alice")
    url = listener_url(server, "kes")
    async with httpx.AsyncClient(base_url=url) as direct:
        answer = await direct.post("/kes/v1/unenroll", json=UNENROLL, headers=_forwarded(device))
        assert (answer.status_code, error_code(answer)) == (403, "certificate_untrusted")
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=url, transport=transport) as proxy:
        answer = await proxy.post("/kes/v1/unenroll", json=UNENROLL, headers=_forwarded(device))
        assert answer.status_code == 200, answer.text
