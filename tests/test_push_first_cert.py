"""The first usable push certificate, installed while the server runs (e.g. Apple's, after the
development identity): `mdm reload` starts the APNs client and iOS devices are pushed from then
on, without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from apns_support import Env, apns_env
from ios_support import new_phone
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Event, Protocol
from mdm.pki import services as pki_services
from mdm.push.transports import APNS_CLIENT
from mdm.server.runtime import Server


@pytest.fixture
async def apns(tmp_path: Path) -> AsyncIterator[Env]:
    async with apns_env(tmp_path / "apns") as env:
        yield env


@pytest.fixture
def extra_config(apns: Env, tmp_path: Path) -> str:
    # The certificate file does not exist yet: APNs cannot start.
    cert, key = tmp_path / "push-id" / "push.pem", tmp_path / "push-id" / "push.key"
    return (
        f'[apns]\ncertificate_file = "{cert}"\nkey_file = "{key}"\nbase_url = "{apns.fake.url}"\n'
        f'ca_file = "{apns.certs.server_ca}"\n'
    )


async def test_reload_starts_apns_with_the_first_certificate(
    server: Server, apns: Env, api: httpx.AsyncClient, ios: httpx.AsyncClient, db: Database, tmp_path: Path
) -> None:
    assert server.ctx.services.get(APNS_CLIENT) is None
    assert server.ctx.pushers.get(Protocol.IOS) is None
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)

    directory = tmp_path / "push-id"
    directory.mkdir()
    (directory / "push.pem").write_bytes(apns.identity.cert_pem)
    (directory / "push.key").write_bytes(apns.identity.key_pem)
    status = await server.reloader.reload()
    assert status["ok"], status
    client = server.ctx.services.get(APNS_CLIENT)
    assert client is not None and client.identity.topic == apns.identity.topic
    assert server.ctx.pushers.get(Protocol.IOS) is not None

    [device] = (await api.get("/api/v1/devices", params={"q": phone.udid})).json()["items"]
    sent = await api.post(f"/api/v1/devices/{device['id']}/commands", json={"type": "Block"})
    assert sent.status_code == 201, sent.text
    for _ in range(200):
        if apns.fake.requests:
            break
        await asyncio.sleep(0.05)
    assert apns.fake.requests >= 1
    async with db.session() as session:
        kinds = set((await session.scalars(select(Event.type))).all())
    assert "push_certificate_replaced" in kinds
