"""Device and command events of the catalog, on iOS and KES: command_delivered at the first
delivery only, device_status_changed beside the protocol's own event, policy_applied when the
agent's applied version changes, and the periodic devices_seen summary (distinct devices, no
event per check-in)."""

from __future__ import annotations

import httpx
import pytest
from ios_support import Phone, device_id_of, new_phone, queue_command
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.ios.plugin import service as ios_service
from mdm.kes.keys_sync import SYNC
from mdm.pki import services as pki_services
from mdm.server.runtime import Server
from tests.kes_sync_support import enqueue, new_agent, result


@pytest.fixture
def extra_config() -> str:
    return "[kes]\nmin_sync_spacing_seconds = 0\n"


async def events_of(db: Database, type_: str, device_id: int | None = None) -> list[Event]:
    async with db.session() as session:
        stmt = select(Event).where(Event.type == type_).order_by(Event.id)
        if device_id is not None:
            stmt = stmt.where(Event.device_id == device_id)
        return list((await session.scalars(stmt)).all())


async def test_ios_command_delivered_once_when_the_device_fetches_it(
    phone: Phone, ios: httpx.AsyncClient, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceInformation", "Queries": ["OSVersion"]},
                               type_="DeviceInformation")
    assert await events_of(db, "command_delivered") == []  # queued is not delivered
    answer = await phone.report(ios)
    assert answer.status_code == 200 and guid.encode() in answer.content
    delivered = await events_of(db, "command_delivered")
    assert [(e.device_id, e.body) for e in delivered] == [
        (device_id, {"command": guid, "command_type": "DeviceInformation"})
    ]
    # NotNow, then the device polls again: the redelivery is not reported a second time.
    assert (await phone.report(ios, "NotNow", guid)).status_code == 200
    await phone.report(ios)
    assert len(await events_of(db, "command_delivered")) == 1


async def test_ios_checkout_and_reenrollment_change_the_status(
    phone: Phone, ios: httpx.AsyncClient, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    assert await events_of(db, "device_status_changed") == []  # a new device starts ok: no change
    assert (await phone.checkin(ios, {"MessageType": "CheckOut", "Topic": "t"})).status_code == 200
    await phone.enroll(ios)
    changes = await events_of(db, "device_status_changed", device_id)
    assert [e.body for e in changes] == [
        {"status": "unmanaged", "previous": "ok", "reason": "checked_out"},
        {"status": "ok", "previous": "unmanaged", "reason": "enrolled"},
    ]
    unenrolled = await events_of(db, "device_unenrolled", device_id)  # the iOS CheckOut event
    assert len(unenrolled) == 1 and unenrolled[0].id < changes[1].id


async def test_ios_devices_seen_counts_distinct_devices_per_summary(
    server: Server, phone: Phone, ios: httpx.AsyncClient, db: Database
) -> None:
    svc = ios_service(server.ctx)
    await svc.last_seen.flush(svc.db)
    await svc.last_seen.seen.report(svc.db)  # close the interval of the enrollment
    async with db.transaction() as session:
        await session.execute(Event.__table__.delete().where(Event.type == "devices_seen"))
    other = await new_phone(db, pki_services.ca(server.ctx))
    await other.enroll(ios)
    for _ in range(3):
        assert (await phone.report(ios)).status_code == 200
        await svc.last_seen.flush(svc.db)  # the summary is not due yet: no event
    await other.report(ios)
    await svc.last_seen.flush(svc.db)
    assert await events_of(db, "devices_seen") == []
    svc.last_seen.seen.interval_seconds = 0.0
    await svc.last_seen.flush(svc.db)
    seen = await events_of(db, "devices_seen")
    assert len(seen) == 1 and seen[0].device_id is None
    body = seen[0].body
    assert (body["protocol"], body["devices"]) == ("ios", 2)
    assert body["since"] < body["until"]
    await svc.last_seen.flush(svc.db)  # nothing seen since: no empty summary
    assert len(await events_of(db, "devices_seen")) == 1


async def test_kes_delivered_applied_policy_status_and_seen(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    remove = await enqueue(db, agent.device_id, "Remove")
    sync = server.ctx.services[SYNC]
    sync.last_sync.seen.interval_seconds = 0.0
    async with agent.client(server) as client:
        first = await agent.sync(client, applied_policy_version="v1")
        assert first.status_code == 200 and [c["id"] for c in first.json()["commands"]] == [remove]
        await agent.sync(client, applied_policy_version="v1")  # the same version: nothing new
        await agent.sync(client, applied_policy_version="v2")
        await sync.last_sync.flush(sync.db)
        done = await agent.sync(client, results=[result(remove)])
        assert done.status_code == 200, done.text
    delivered = await events_of(db, "command_delivered", agent.device_id)
    assert [e.body for e in delivered] == [{"command": remove, "command_type": "Remove"}]
    applied = await events_of(db, "policy_applied", agent.device_id)
    assert [e.body for e in applied] == [
        {"version": "v1", "previous": None}, {"version": "v2", "previous": "v1"}
    ]
    changes = await events_of(db, "device_status_changed", agent.device_id)
    assert [e.body for e in changes] == [
        {"status": "unmanaged", "previous": "ok", "reason": "remove_confirmed"}
    ]
    assert len(await events_of(db, "kes_device_removed", agent.device_id)) == 1
    seen = await events_of(db, "devices_seen")
    assert [(e.body["protocol"], e.body["devices"]) for e in seen] == [("kes", 1)]
