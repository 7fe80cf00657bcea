"""End to end over real sockets: an administrator queues a command → the dispatcher pushes over
HTTP/2 with mutual TLS to the APNs contract fake → the fake forwards the wake-up to the simulated
device → the device polls, gets the command and answers. Nobody polls by hand: the device moves
only when it is woken. Also: a renewed push certificate (same topic) taken by `mdm reload`
without a restart, and one with another topic refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apns_support import Env, apns_env
from conftest import listener_url
from ios_support import Phone, new_phone
from sqlalchemy import select
from test_cli_client import Cli

from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.devfakes.certs import push_certificate
from mdm.pki import services as pki_services
from mdm.push.transports import APNS_CLIENT
from mdm.server.runtime import Server


class Woken:
    """The simulated fleet: a push to a device's token makes that device poll and answer."""

    def __init__(self) -> None:
        self.phones: dict[str, Phone] = {}
        self.ios: httpx.AsyncClient | None = None
        self.answered: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.pushes: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def on_push(self, token: str, topic: str, body: dict[str, Any]) -> None:
        self.pushes.append({"token": token, "topic": topic, "body": body})
        phone = self.phones.get(token)
        if phone is not None:
            task = asyncio.ensure_future(self._wake(phone))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _wake(self, phone: Phone) -> None:
        assert self.ios is not None
        import plistlib

        answer = await phone.report(self.ios)
        while answer.content:
            command = plistlib.loads(answer.content)
            uuid = command["CommandUUID"]
            answer = await phone.report(self.ios, "Acknowledged", uuid)
            await self.answered.put((phone.udid, uuid))


@pytest.fixture
def fleet() -> Woken:
    return Woken()


@pytest.fixture
async def apns(tmp_path: Path, fleet: Woken) -> AsyncIterator[Env]:
    async with apns_env(tmp_path / "apns", on_push=fleet.on_push) as env:
        yield env


def _write_identity(directory: Path, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "push.pem", directory / "push.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def extra_config(apns: Env, tmp_path: Path) -> str:
    cert, key = _write_identity(tmp_path / "push-id", apns.identity.cert_pem, apns.identity.key_pem)
    return (
        f'[apns]\ncertificate_file = "{cert}"\nkey_file = "{key}"\nbase_url = "{apns.fake.url}"\n'
        f'ca_file = "{apns.certs.server_ca}"\n'
    )


@pytest.fixture
async def woken_phone(server: Server, db: Database, ios: httpx.AsyncClient, fleet: Woken) -> Phone:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)  # Authenticate + TokenUpdate (token 0101…, a PushMagic)
    fleet.ios = ios
    fleet.phones["01" * 32] = phone
    return phone


async def test_enqueue_push_poll_answer(
    api: httpx.AsyncClient, apns: Env, woken_phone: Phone, fleet: Woken
) -> None:
    r = await api.get("/api/v1/devices", params={"q": woken_phone.udid})
    [device] = r.json()["items"]
    sent = await api.post(f"/api/v1/devices/{device['id']}/commands", json={"type": "Block"})
    assert sent.status_code == 201, sent.text
    guid = sent.json()["guid"]
    udid, answered = await asyncio.wait_for(fleet.answered.get(), timeout=20)
    assert (udid, answered) == (woken_phone.udid, guid)
    assert fleet.pushes and fleet.pushes[0]["body"] == {"mdm": "5A2A8D45-1D1A-4D62-A6A4-4F2E1E6B0F11"}
    for _ in range(100):
        command = (await api.get(f"/api/v1/commands/{guid}")).json()
        if command["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert command["status"] == "completed"
    status = (await api.get("/api/v1/push/status")).json()
    assert status["services"]["apns"]["sent"] >= 1 and status["services"]["apns"]["circuit_open"] is False
    assert status["certificate"]["topic"] == apns.identity.topic
    assert fleet.pushes[0]["topic"] == apns.identity.topic


async def test_bulk_enqueue_wakes_every_device(
    api: httpx.AsyncClient, db: Database, server: Server, ios: httpx.AsyncClient, fleet: Woken
) -> None:
    fleet.ios = ios
    phones = []
    for i in range(5):
        phone = await new_phone(db, pki_services.ca(server.ctx))
        token = bytes([i + 1]) * 32
        await phone.checkin(ios, phone.authenticate())
        r = await phone.checkin(ios, phone.token_update(token))
        assert r.status_code == 200
        fleet.phones[token.hex()] = phone
        phones.append(phone)
    r = await api.post("/api/v1/commands", json={"type": "Block", "devices": "all"})
    assert r.status_code == 202, r.text
    answered = {await asyncio.wait_for(fleet.answered.get(), timeout=20) for _ in phones}
    assert {udid for udid, _ in answered} == {p.udid for p in phones}
    # The operation counts what the gateway accepted (the push service's receipts, wired in
    # mdm/plugins.py) and what the devices answered.
    href = r.json()["href"].removeprefix("/api/v1")
    for _ in range(100):
        op = (await api.get(f"/api/v1{href}")).json()
        if op["woken"] == 5 and op["completed"] == 5:
            break
        await asyncio.sleep(0.1)
    assert (op["state"], op["queued"], op["woken"], op["completed"]) == ("queued", 5, 5, 5), op


async def test_renewed_certificate_is_used_without_restart(
    server: Server, apns: Env, config: Any, tmp_path: Path, db: Database
) -> None:
    client = server.ctx.services[APNS_CLIENT]
    before = client.identity
    renewed = push_certificate(apns.push_ca, before.topic, days=730)
    cert, key = _write_identity(tmp_path / "push-id", renewed.cert_pem, renewed.key_pem)
    status = await server.reloader.reload()
    assert status["ok"], status
    assert client.identity is not before and client.identity.not_after > before.not_after
    async with db.session() as session:
        kinds = set((await session.scalars(select(Event.type))).all())
    assert "push_certificate_replaced" in kinds

    # Another topic: refused, the running identity stays.
    other = push_certificate(apns.push_ca, "com.apple.mgmt.External.other-topic")
    _write_identity(tmp_path / "push-id", other.cert_pem, other.key_pem)
    kept = client.identity
    await server.reloader.reload()
    assert client.identity is kept
    async with db.session() as session:
        refused = (await session.scalars(
            select(Event).where(Event.type == "push_certificate_refused")
        )).all()
    assert refused and refused[-1].body["topic"] == "com.apple.mgmt.External.other-topic"
    del cert, key


async def test_an_unregistered_token_is_shown_and_never_pushed_again(
    api: httpx.AsyncClient, apns: Env, woken_phone: Phone, fleet: Woken, db: Database,
    server: Server, admin_token: str, config: Any, tmp_path: Path,
) -> None:
    """Apple answers 410 Unregistered: the token is marked invalid (an event), the API and the
    CLI list the device, and a later command pushes nothing until a newer TokenUpdate."""
    token = "01" * 32
    apns.fake.unregister(token)
    [device] = (await api.get("/api/v1/devices", params={"q": woken_phone.udid})).json()["items"]
    first = await api.post(f"/api/v1/devices/{device['id']}/commands", json={"type": "Block"})
    assert first.status_code == 201, first.text
    for _ in range(200):
        page = (await api.get("/api/v1/push/invalid-tokens")).json()
        if page["items"]:
            break
        await asyncio.sleep(0.05)
    assert [d["id"] for d in page["items"]] == [device["id"]]
    async with db.session() as session:
        kinds = list((await session.scalars(select(Event.type).where(Event.device_id == device["id"]))).all())
    assert "push_token_invalid" in kinds

    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(listener_url(server, "admin"), admin_token, config.data_path, home)
    listed = await cli.json("push", "invalid-tokens")
    assert isinstance(listed, dict) and [d["identifier"] for d in listed["items"]] == [woken_phone.udid]
    assert woken_phone.udid in await cli.ok("push", "invalid-tokens")
    status = await cli.ok("push", "status")
    assert f"topic {apns.identity.topic}" in status and "Unregistered 1" in status
    assert "devices with an invalid push token: 1" in status

    requests = apns.fake.requests
    sent = await api.post(f"/api/v1/devices/{device['id']}/commands", json={"type": "RefreshDeviceInfo"})
    assert sent.status_code == 201, sent.text
    await asyncio.sleep(0.5)
    assert apns.fake.requests == requests  # not pushed again
