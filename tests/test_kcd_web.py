"""The web listener's one-time links behind a publishing proxy with kcd = true (real MIT KDC): a
link is served only to the trusted proxy (127.0.0.2) in the name of the link's own user, with the
mutual-authentication token; every refusal leaves the link usable and is a security event. The
CRL and the CA certificates stay open."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from enroll_support import APNS_TOML
from kcd_support import initiate, login, verify_mutual
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.enroll.event_types_kcd import SECURITY_LINK_NEGOTIATE_REJECTED
from mdm.pki.crl import CRL_PATH
from mdm.server.runtime import Server
from tests.kdc import Kdc, kdc_fixture, krb5_ccache_fixture  # noqa: F401  (fixtures)

PROXY = "127.0.0.2"  # listeners.web.trusted_proxies of the test configuration
PROFILE_TYPE = "application/x-apple-aspen-config"
TLS_DONE = {"X-Forwarded-Proto": "https"}  # the proxy terminated the device's TLS


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


@pytest.fixture
def config(config: Config, kdc: Kdc) -> Config:
    assert config.listeners.web.trusted_proxies == [f"{PROXY}/32"]
    config.listeners.web.kcd = True
    config.kerberos.keytab = str(kdc.service_keytab)
    config.kerberos.service_principal = kdc.service_principal
    config.kerberos.realms = [kdc.realm]
    return config


async def _link(api: httpx.AsyncClient, user: str) -> str:
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": user})
    assert r.status_code == 201, r.text
    return urlsplit(str(r.json()["url"])).path


async def _count(db: Database, event_type: str) -> int:
    async with db.session() as session:
        found = await session.scalar(select(func.count()).select_from(Event).where(Event.type == event_type))
    return int(found or 0)


async def _refusals(db: Database) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = await session.scalars(
            select(Event).where(Event.type == SECURITY_LINK_NEGOTIATE_REJECTED.name).order_by(Event.id)
        )
        return [e.body for e in rows]


def _negotiate(kdc: Kdc, name: str, ccache: Path) -> str:
    login(kdc, name, ccache)
    return initiate(kdc.service_principal)[1]


async def test_a_link_is_served_only_to_its_users_ticket_from_the_proxy(
    api: httpx.AsyncClient, server: Server, config: Config, db: Database, kdc: Kdc, krb5_ccache: Path
) -> None:
    path = await _link(api, "alice")
    await _link(api, "bob")  # bob is a user too
    token = path.removeprefix("/e/")
    plain = listener_url(server, "web", tls=False) + path
    https = listener_url(server, "web", tls=True) + path

    # Not through the proxy: refused even with alice's good ticket, on either port.
    async with httpx.AsyncClient(verify=client_ssl_context(config)) as direct:
        r = await direct.get(https, headers={"Authorization": _negotiate(kdc, "alice", krb5_ccache)})
        assert r.status_code == 403, r.text
        assert "WWW-Authenticate" not in r.headers
    transport = httpx.AsyncHTTPTransport(local_address=PROXY)
    async with httpx.AsyncClient(transport=transport) as proxy:
        missing = await proxy.get(plain, headers=TLS_DONE)
        assert missing.status_code == 401, missing.text
        assert missing.headers["WWW-Authenticate"] == "Negotiate"
        assert missing.headers["content-type"].startswith("text/plain")
        garbage = "Negotiate " + base64.b64encode(b"A" * 40).decode()  # base64, but no SPNEGO
        for bad in ("Negotiate", "Negotiate !!!", garbage, "Basic YWxpY2U6eA=="):
            r = await proxy.get(plain, headers={**TLS_DONE, "Authorization": bad})
            assert r.status_code == 403, (bad, r.text)
        bob = await proxy.get(
            plain, headers={**TLS_DONE, "Authorization": _negotiate(kdc, "bob", krb5_ccache)}
        )
        assert bob.status_code == 403, bob.text
        assert token not in bob.text
        nobody = await proxy.get(
            plain, headers={**TLS_DONE, "Authorization": _negotiate(kdc, "carol", krb5_ccache)}
        )
        assert nobody.status_code == 403, nobody.text  # a principal of the realm that is no user

        assert await _count(db, "enrollment_downloaded") == 0  # nothing claimed: the link survives
        refusals = await _refusals(db)
        reasons = [(e["reason"], e["principal"]) for e in refusals]
        assert reasons[:2] == [("untrusted_proxy", None), ("missing", None)]
        assert reasons[2:] == [("malformed", None)] * 4 + [
            ("other_user", f"bob@{kdc.realm}"), ("no_user", f"carol@{kdc.realm}")
        ]
        assert all(e["peer"] == PROXY for e in refusals[1:])
        assert all(token not in str(e) for e in refusals)  # the link's secret is never recorded

        login(kdc, "alice", krb5_ccache)
        context, alice = initiate(kdc.service_principal)
        served = await proxy.get(plain, headers={**TLS_DONE, "Authorization": alice})
        assert served.status_code == 200, served.text
        assert served.headers["content-type"] == PROFILE_TYPE
        verify_mutual(context, served.headers["WWW-Authenticate"])
        again = await proxy.get(
            plain, headers={**TLS_DONE, "Authorization": _negotiate(kdc, "alice", krb5_ccache)}
        )
        assert again.status_code == 410
        assert again.headers["WWW-Authenticate"].startswith("Negotiate ")
    assert await _count(db, "enrollment_downloaded") == 1


async def test_public_files_need_no_kerberos(server: Server) -> None:
    async with httpx.AsyncClient(base_url=listener_url(server, "web", tls=False)) as direct:
        for path in (CRL_PATH, "/ca/root.pem"):
            r = await direct.get(path)
            assert r.status_code == 200, (path, r.text)
