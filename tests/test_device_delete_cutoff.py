"""Deleting or unenrolling a device ends its binding at once, in this process and on every replica
(the binding cache is long here, so its TTL cannot be what cuts the device off), and ids are never
reused: a deleted device's certificate never reaches a later device's record or commands."""

from __future__ import annotations

import asyncio
import plistlib
from typing import Any

import httpx
import pytest
from binding_support import device_of, events_of, rejections
from conftest import PG_URL, client_ssl_context, listener_url
from ios_support import new_phone, queue_command

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import ApiToken, Command, Device, Group, Protocol, User
from mdm.enroll.tables import Enrollment
from mdm.ios.plugin import SERVICE
from mdm.pki import services as pki_services
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, open_context


@pytest.fixture
def extra_config() -> str:
    return "[ios]\nbinding_cache_seconds = 300\n"


def _offered(response: httpx.Response) -> str | None:
    assert response.status_code == 200, response.text
    return plistlib.loads(response.content)["CommandUUID"] if response.content else None


async def test_a_deleted_device_is_refused_at_its_next_poll(
    api: httpx.AsyncClient, ios: httpx.AsyncClient, server: Server, db: Database
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    assert _offered(await phone.report(ios)) is None  # the binding is cached now
    device = await device_of(db, phone.udid)
    assert (await api.delete(f"/api/v1/devices/{device.id}")).status_code == 204
    response = await phone.report(ios)
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "unbound"
    assert [e.body["reason"] for e in await rejections(db)] == ["unbound"]
    # Check-in messages too.
    assert (await phone.checkin(ios, phone.token_update())).status_code == 400


async def test_a_deleted_devices_certificate_never_gets_a_new_devices_commands(
    api: httpx.AsyncClient, ios: httpx.AsyncClient, server: Server, db: Database
) -> None:
    """The issue's case: on SQLite the freed id went to the next enrollment, and the deleted
    device's cached binding then received (and completed) the new device's commands."""
    old = await new_phone(db, pki_services.ca(server.ctx))
    await old.enroll(ios)
    assert _offered(await old.report(ios)) is None
    old_id = (await device_of(db, old.udid)).id
    assert (await api.delete(f"/api/v1/devices/{old_id}")).status_code == 204
    new = await new_phone(db, pki_services.ca(server.ctx))
    await new.enroll(ios)
    new_id = (await device_of(db, new.udid)).id
    assert new_id > old_id
    guid = await queue_command(db, new_id, {"RequestType": "EraseDevice"}, type_="Wipe")
    assert (await old.report(ios)).status_code == 400
    assert (await old.report(ios, "Acknowledged", guid)).status_code == 400
    assert _offered(await new.report(ios)) == guid


async def _insert(db: Database, model: Any) -> int:
    values: dict[str, dict[str, Any]] = {
        "users": {"name": "u"},
        "groups": {"name": "g"},
        "devices": {"protocol": Protocol.IOS.value, "identifier": "udid", "inventory": {}, "attributes": {}},
        "api_tokens": {"name": "t", "prefix": "p", "secret_hash": b"\0" * 32, "scopes": "admin"},
    }
    async with db.transaction() as session:
        if model is Command:
            device = Device(protocol=Protocol.IOS.value, identifier="cmd-host", inventory={}, attributes={})
            session.add(device)
            await session.flush()
            row = Command(guid="G", device_id=device.id, type="Raw", args={}, payload={})
        elif model is Enrollment:
            user = User(name="owner")
            session.add(user)
            await session.flush()
            row = Enrollment(
                uuid="00000000-0000-0000-0000-000000000000", platform="ios", user_id=user.id,
                delivery="file", status="delivered", identity="pkcs12", expires_at=user.created_at,
                mdm_profile_identifier="x",
            )  # fmt: skip
        else:
            row = model(**values[model.__tablename__])
        session.add(row)
        await session.flush()
        return int(row.id)


async def _delete(db: Database, model: Any, row_id: int) -> None:
    async with db.transaction() as session:
        row = await session.get(model, row_id)
        await session.delete(row)
        if model is Command:
            await session.delete(await session.get(Device, row.device_id))
        if model is Enrollment:
            await session.delete(await session.get(User, row.user_id))


@pytest.mark.parametrize(
    "model", [Device, User, Group, Command, Enrollment, ApiToken], ids=lambda m: m.__tablename__
)
async def test_ids_are_never_reused(db: Database, model: Any) -> None:
    first = await _insert(db, model)
    await _delete(db, model, first)
    assert await _insert(db, model) > first


async def test_remove_completion_ends_the_binding_but_check_out_still_arrives(
    ios: httpx.AsyncClient, server: Server, db: Database
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    device = await device_of(db, phone.udid)
    guid = await queue_command(
        db, device.id, {"RequestType": "RemoveProfile", "Identifier": "com.example.mdm"}, type_="Remove"
    )
    assert _offered(await phone.report(ios)) == guid
    assert _offered(await phone.report(ios, "Acknowledged", guid)) is None
    assert (await device_of(db, phone.udid)).status == "unmanaged"
    # No more commands for the removed enrollment...
    await queue_command(db, device.id, {"RequestType": "DeviceLock"}, type_="Block")
    response = await phone.report(ios)
    assert response.status_code == 400 and response.json()["error"]["details"]["reason"] == "binding_ended"
    assert (await phone.checkin(ios, phone.token_update(token=b"\x09" * 32))).status_code == 400
    # ... but the CheckOut the removal triggers is recorded.
    assert (await phone.checkin(ios, {"MessageType": "CheckOut", "Topic": "t"})).status_code == 200
    assert len(await events_of(db, "device_unenrolled")) == 1


async def _dropped_on(replica: Server, device_id: int) -> None:
    """Wait (at most 2 s, far below the 300 s cache TTL) until the replica has heard the NOTIFY
    that ends the device's binding: it arrives a few milliseconds after the other replica's
    commit, so a request sent in that window could still be served from the cache."""
    bindings = replica.ctx.services[SERVICE].bindings
    for _ in range(200):
        if not bindings.holds(device_id):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"replica still caches the binding of device {device_id}")


@pytest.mark.skipif(not PG_URL, reason="replicas share a PostgreSQL database; SQLite is one process")
async def test_deleting_on_one_replica_cuts_the_device_off_on_the_other(
    api: httpx.AsyncClient, server: Server, config: Config, db: Database
) -> None:
    replica = Server(await open_context(config), PLUGINS)
    await replica.start()
    try:
        tls = client_ssl_context(config)
        async with (
            httpx.AsyncClient(base_url=listener_url(server, "ios"), verify=tls, timeout=30) as on_a,
            httpx.AsyncClient(base_url=listener_url(replica, "ios"), verify=tls, timeout=30) as on_b,
        ):
            async with db.transaction() as session:
                owner = User(name="alice")
                session.add(owner)
                await session.flush()
            deleted, checked_out, renewed = [
                await new_phone(db, pki_services.ca(server.ctx), user_id=owner.id) for _ in range(3)
            ]
            for phone in (deleted, checked_out, renewed):
                await phone.enroll(on_a)
                assert _offered(await phone.report(on_b)) is None  # bound in B's cache
            # Deleted through A's API: B refuses the device's very next request.
            device = await device_of(db, deleted.udid)
            assert replica.ctx.services[SERVICE].bindings.holds(device.id)
            assert (await api.delete(f"/api/v1/devices/{device.id}")).status_code == 204
            await _dropped_on(replica, device.id)
            refused = await deleted.report(on_b)
            assert refused.status_code == 400, refused.text
            # Checked out on A: B refuses the old binding too.
            check_out = {"MessageType": "CheckOut", "Topic": "t"}
            assert (await checked_out.checkin(on_a, check_out)).status_code == 200
            await _dropped_on(replica, (await device_of(db, checked_out.udid)).id)
            refused = await checked_out.report(on_b)
            assert refused.status_code == 400, refused.text
            # Re-enrolled on A with a new identity: B no longer accepts the old one.
            successor = await new_phone(db, pki_services.ca(server.ctx), udid=renewed.udid, user_id=owner.id)
            assert (await successor.checkin(on_a, successor.authenticate())).status_code == 200
            await _dropped_on(replica, (await device_of(db, renewed.udid)).id)
            refused = await renewed.report(on_b)
            assert refused.status_code == 400, refused.text
            assert _offered(await successor.report(on_b)) is None
            assert [e.body["reason"] for e in await rejections(db)] == ["unbound"] * 3
    finally:
        await replica.stop()

