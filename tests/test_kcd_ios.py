"""The iOS listener behind a publishing proxy with kcd = true, against the real MIT KDC: the
proxy (127.0.0.2, the test configuration's trusted proxy) forwards the device's certificate in
Client-Cert and the user's Kerberos ticket in Authorization: Negotiate. Every refusal is 400."""

from __future__ import annotations

import base64
import plistlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import listener_url
from cryptography.hazmat.primitives import serialization
from ios_support import Phone, device_id_of, new_phone
from kcd_support import initiate, login, service, verify_mutual
from sqlalchemy import func, select

from mdm.config import Config
from mdm.core import users
from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.pki import services as pki_services
from mdm.server.runtime import Server
from tests.kdc import Kdc, kdc_fixture, krb5_ccache_fixture  # noqa: F401  (fixtures)


@pytest.fixture
def config(config: Config, kdc: Kdc) -> Config:
    config.listeners.ios.mode = "plain"
    config.listeners.ios.kcd = True
    config.kerberos.keytab = str(kdc.service_keytab)
    config.kerberos.service_principal = kdc.service_principal
    config.kerberos.realms = [kdc.realm]
    return config


@pytest.fixture
async def people(db: Database) -> dict[str, int]:
    async with db.transaction() as session:
        return {name: (await users.create(session, name)).id for name in ("alice", "bob")}


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    url = listener_url(server, "ios", tls=False)
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=url, transport=transport) as client:
        yield client


def _cert_header(phone: Phone) -> dict[str, str]:
    der = phone.cert.public_bytes(serialization.Encoding.DER)
    return {"Client-Cert": ":" + base64.b64encode(der).decode() + ":"}


async def _put(client: httpx.AsyncClient, path: str, phone: Phone, message: dict[str, object],
               authorization: str | None) -> httpx.Response:
    headers = _cert_header(phone)
    if authorization is not None:
        headers["Authorization"] = authorization
    return await client.put(path, content=plistlib.dumps({"UDID": phone.udid, **message}), headers=headers)


async def _counts(db: Database) -> tuple[int, int]:
    async with db.session() as session:
        devices = await session.scalar(select(func.count()).select_from(Device))
        rejected = await session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "security_identity_rejected")
        )
    return int(devices or 0), int(rejected or 0)


async def test_principal_binds_and_owns_the_device(
    server: Server, db: Database, proxy: httpx.AsyncClient, kdc: Kdc, krb5_ccache: Path,
    people: dict[str, int],
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    login(kdc, "alice", krb5_ccache)
    context, negotiate = initiate(kdc.service_principal)
    answer = await _put(proxy, "/mdm/checkin", phone, phone.authenticate(), negotiate)
    assert answer.status_code == 200, answer.text
    verify_mutual(context, answer.headers["WWW-Authenticate"])
    device_id = await device_id_of(db, phone.udid)
    async with db.session() as session:
        assert (await session.get(Device, device_id)).user_id == people["alice"]  # type: ignore[union-attr]

    _, negotiate = initiate(kdc.service_principal)
    idle = await _put(proxy, "/mdm/server", phone, {"Status": "Idle"}, negotiate)
    assert idle.status_code == 200 and idle.headers["WWW-Authenticate"].startswith("Negotiate ")
    # The same token again: a replay.
    assert (await _put(proxy, "/mdm/server", phone, {"Status": "Idle"}, negotiate)).status_code == 400

    # Bob may neither use nor re-bind Alice's device.
    login(kdc, "bob", krb5_ccache)
    _, negotiate = initiate(kdc.service_principal)
    refused = await _put(proxy, "/mdm/server", phone, {"Status": "Idle"}, negotiate)
    assert refused.status_code == 400 and refused.json()["error"]["details"]["reason"] == "other_user"
    _, negotiate = initiate(kdc.service_principal)
    again = await _put(proxy, "/mdm/checkin", phone, phone.authenticate(), negotiate)
    assert again.status_code == 400 and again.json()["error"]["details"]["reason"] == "other_user"
    async with db.session() as session:
        assert (await session.get(Device, device_id)).user_id == people["alice"]  # type: ignore[union-attr]


async def test_refusals_are_400_and_write_no_device(
    server: Server, db: Database, proxy: httpx.AsyncClient, kdc: Kdc, krb5_ccache: Path,
    people: dict[str, int],
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    login(kdc, "carol", krb5_ccache)  # a principal of the realm, but no user of ours
    _, carol = initiate(kdc.service_principal)
    login(kdc, "alice", krb5_ccache)
    _, other_service = initiate(service(kdc, "HTTP/otherhost"))
    _, good = initiate(kdc.service_principal)
    token = base64.b64decode(good.split()[1])
    truncated = "Negotiate " + base64.b64encode(token[: len(token) // 3]).decode()
    before = await _counts(db)
    cases = {
        "missing": None,
        "malformed": "Negotiate %%%garbage%%%",
        "wrong_service": other_service,
        "no_user": carol,
    }
    for reason, header in cases.items():
        answer = await _put(proxy, "/mdm/checkin", phone, phone.authenticate(), header)
        assert answer.status_code == 400, (reason, answer.text)
        assert answer.json()["error"]["details"]["reason"] == reason
    truncated_answer = await _put(proxy, "/mdm/checkin", phone, phone.authenticate(), truncated)
    assert truncated_answer.status_code == 400
    # A valid ticket, but from an address that is not a trusted proxy.
    async with httpx.AsyncClient(base_url=listener_url(server, "ios", tls=False)) as direct:
        answer = await _put(direct, "/mdm/checkin", phone, phone.authenticate(), good)
    assert answer.status_code == 400 and answer.json()["error"]["details"]["reason"] == "untrusted_proxy"
    devices, rejected = await _counts(db)
    assert devices == before[0]  # nothing enrolled
    assert rejected > before[1]  # refusals are security events (bounded per source)
