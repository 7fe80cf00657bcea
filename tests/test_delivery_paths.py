"""The delivery hot path (issue 12): Core statements instead of ORM flushes keep every record the
ORM path wrote, in the same order; the queue's find-and-claim is one statement; the SQLite driver
spends no thread hop on a commit or rollback without a transaction."""

from __future__ import annotations

import asyncio
import collections
import logging
import plistlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import aiosqlite.core
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from ios_support import Phone, command_records, device_id_of, offered, queue_command
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mdm.core import commands, events
from mdm.core.event_types import COMMAND_COMPLETED, COMMAND_CREATED
from mdm.db.engine import Database
from mdm.db.models import Command, CommandQueueEntry, Device, Event
from mdm.ios import command_steps, inventory
from mdm.ios import store as ios_store
from mdm.ios.command_codec import to_plist_dict


async def test_an_answer_writes_command_journal_and_events_in_order(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(
        db, device_id, {"RequestType": "DeviceInformation", "Queries": ["DeviceName", "OSVersion"]}
    )
    assert offered(await phone.report(ios)) == guid
    answer = {"QueryResponses": {"DeviceName": "Kim's iPhone", "OSVersion": "17.6"}}
    assert offered(await phone.report(ios, "Acknowledged", guid, **answer)) is None
    command, journal, types = await command_records(db, guid)
    assert journal == ["processing", "delivered", "completed"]
    assert types[-2:] == ["inventory_updated", "command_completed"]
    assert command.status == "completed" and command.active is None and command.payload == {}
    assert command.result_info == "Acknowledged" and command.attempts == 1
    assert command.result_data == answer
    assert command.finished_at is not None and command.delivered_at is not None
    async with db.session() as session:
        assert await session.get(CommandQueueEntry, command.id) is None
        event = await session.scalar(select(Event).where(Event.type == "command_completed"))
        assert event is not None
        assert event.body == {
            "command": guid, "command_type": "Raw", "status": "completed", "info": "Acknowledged"
        }
        assert event.severity == COMMAND_COMPLETED.severity.value and event.created_at is not None


async def test_the_next_command_follows_the_answer_by_priority(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    first = await queue_command(db, device_id, {"RequestType": "ProfileList"}, type_="Raw", priority=5)
    low = await queue_command(db, device_id, {"RequestType": "SecurityInfo"}, type_="Locate")
    high = await queue_command(db, device_id, {"RequestType": "CertificateList"}, type_="Alarm", priority=9)
    assert offered(await phone.report(ios)) == high
    assert offered(await phone.report(ios, "Acknowledged", high, CertificateList=[])) == first
    assert offered(await phone.report(ios, "Acknowledged", first, ProfileList=[])) == low
    assert offered(await phone.report(ios, "Acknowledged", low, SecurityInfo={})) is None
    for guid in (high, first, low):
        _, journal, _ = await command_records(db, guid)
        assert journal == ["processing", "delivered", "completed"]


async def test_claim_next_finds_nothing_in_an_empty_queue(db: Database, phone: Phone) -> None:
    device_id = await device_id_of(db, phone.udid)
    async with db.transaction() as session:
        assert await commands.claim_next(session, device_id, ready_only=False) == (False, None)
    guid = await queue_command(db, device_id, {"RequestType": "ProfileList"})
    async with db.transaction() as session:
        found, command = await commands.claim_next(session, device_id, ready_only=True)
        assert found and command is not None and command.guid == guid and command.attempts == 1
    async with db.transaction() as session:  # claimed (no longer deliverable until answered)
        found, command = await commands.claim_next(session, device_id, ready_only=False)
        assert found and command is not None and command.attempts == 2


async def test_emit_now_keeps_the_order_of_emission(db: Database, phone: Phone) -> None:
    device_id = await device_id_of(db, phone.udid)
    body: dict[str, Any] = {"command": "C", "command_type": "Block", "created_by": None}
    async with db.transaction() as session:
        events.emit(session, COMMAND_CREATED, device_id=device_id, **{**body, "command": "first"})
        await events.emit_now(session, COMMAND_CREATED, device_id=device_id, **{**body, "command": "second"})
        events.emit(session, COMMAND_CREATED, device_id=device_id, **{**body, "command": "third"})
    async with db.session() as session:
        created = select(Event).where(Event.type == "command_created").order_by(Event.id)
        rows = await session.scalars(created)
        assert [e.body["command"] for e in rows] == ["first", "second", "third"]


async def test_emit_now_refuses_what_emit_refuses(db: Database) -> None:
    async with db.transaction() as session:
        with pytest.raises(events.UndeclaredEvent):
            await events.emit_now(session, COMMAND_CREATED, command="x", unknown=1)


# ---- the SQLite driver -------------------------------------------------------------------------


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Calls handed to aiosqlite's thread, by function name."""
    counted: collections.Counter[str] = collections.Counter()
    original = aiosqlite.core.Connection._execute

    async def _execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counted[getattr(fn, "__name__", "?")] += 1
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", _execute)
    yield counted


async def test_sqlite_commit_and_pool_return_cost_one_hop(
    db: Database, hops: collections.Counter[str]
) -> None:
    if not db.is_sqlite:
        pytest.skip("the one-hop driver is SQLite's")
    async with db.session() as session:  # warm the pool (the first connection is set up)
        await session.scalar(select(Device.id).limit(1))
    hops.clear()
    async with db.session() as session:
        await session.scalar(select(Device.id).limit(1))  # a read opens no transaction
    assert hops == {"_run": 1}
    hops.clear()
    async with db.transaction() as session:
        session.add(Event(uuid="u-1", type="t", severity="info", body={}))
    assert hops == {"_run": 1, "commit": 1}  # no rollback when the connection returns
    hops.clear()
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            session.add(Event(uuid="u-2", type="t", severity="info", body={}))
            await session.flush()
            raise RuntimeError("abort")
    assert hops == {"_run": 1, "rollback": 1}
    async with db.session() as session:
        assert list((await session.scalars(select(Event.uuid))).all()) == ["u-1"]


# ---- inventory answers ---------------------------------------------------------------------------

FACTS = {
    "name": "Kim's iPhone", "model": "iPhone15,2", "os_name": "iOS", "os_version": "17.6",
    "build_version": "21G80", "serial_number": "F2LXK0ABC", "imei": None, "phone_number": None,
    "attributes": {"model_name": "iPhone"},
}
ANSWER = {
    "DeviceName": "Kim's iPhone", "ProductName": "iPhone15,2", "OSVersion": "17.6", "BuildVersion": "21G80",
    "SerialNumber": "F2LXK0ABC", "ModelName": "iPhone", "BatteryLevel": 0.5,
}


def test_an_answer_that_changes_no_fact_changes_no_column() -> None:
    update = inventory.answer_update(FACTS, "DeviceInformation", {"QueryResponses": ANSWER})
    assert update is not None
    assert update.changes == {} and update.part == "device_info" and update.count == len(ANSWER)
    assert update.entry["values"]["BatteryLevel"] == 0.5 and "refreshed_at" in update.entry


def test_an_answer_changes_only_the_columns_that_differ() -> None:
    answer = {**ANSWER, "OSVersion": "18.0", "IMEI": "35 000000 000000 0", "MEID": "3500000000000"}
    update = inventory.answer_update(FACTS, "DeviceInformation", {"QueryResponses": answer})
    assert update is not None
    assert update.changes == {
        "os_version": "18.0",
        "imei": "35 000000 000000 0",
        "attributes": {"model_name": "iPhone", "meid": "3500000000000"},
    }
    assert inventory.answer_update(FACTS, "DeviceLock", {}) is None


async def _device(db: Database, device_id: int) -> Device:
    async with db.session() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        return device


async def test_an_inventory_answer_sets_its_part_and_keeps_the_others(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    profiles = await queue_command(db, device_id, {"RequestType": "ProfileList"}, type_="Raw")
    assert offered(await phone.report(ios)) == profiles
    listed = [{"PayloadIdentifier": "p", "PayloadContent": []}]
    await phone.report(ios, "Acknowledged", profiles, ProfileList=listed)
    before = await _device(db, device_id)
    for name in ("First name", "First name", "Second name"):
        guid = await queue_command(
            db, device_id, {"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}, type_="Raw"
        )
        assert offered(await phone.report(ios)) == guid
        values = {"DeviceName": name, "OSVersion": before.os_version, "BatteryLevel": 0.25}
        answer = {"QueryResponses": values}
        assert offered(await phone.report(ios, "Acknowledged", guid, **answer)) is None
        device = await _device(db, device_id)
        assert device.name == name
        assert device.os_version == before.os_version and device.serial_number == before.serial_number
        assert device.inventory["device_info"]["values"] == answer["QueryResponses"]
        assert device.inventory["profiles"] == before.inventory["profiles"]  # untouched
        assert device.attributes == before.attributes and device.status == before.status
    async with db.session() as session:
        updated = (await session.scalars(
            select(Event.body).where(Event.type == "inventory_updated").order_by(Event.id)
        )).all()
    assert updated == [{"part": "profiles", "count": 1}] + [{"part": "device_info", "count": 3}] * 3


# ---- the outgoing plist ------------------------------------------------------------------------


def _plain_message(uuid: str, step: dict[str, Any]) -> bytes:
    body = to_plist_dict(step)
    return plistlib.dumps({"CommandUUID": uuid, "Command": body}, fmt=plistlib.FMT_XML)


def test_a_cached_query_plist_is_the_plist_plistlib_writes() -> None:
    queries = {"RequestType": "DeviceInformation", "Queries": ["DeviceName", "OSVersion", "<&>"]}
    for guid in ("0B0C5D1E-AAAA-4BBB-8CCC-000000000001", "0B0C5D1E-AAAA-4BBB-8CCC-000000000002"):
        command = Command(guid=guid, payload=queries, result_data=None)
        assert command_steps.message(command) == _plain_message(guid, queries)
    steps = {"Steps": [{"RequestType": "ProfileList"}, queries]}
    command = Command(guid="G-1", payload=steps, result_data={"steps": [{"ok": True}]})
    assert command_steps.message(command) == _plain_message("G-1.1", queries)
    # A command that may carry a secret is never kept.
    lock = {"RequestType": "DeviceLock", "PIN": "123456"}
    assert command_steps.message(Command(guid="G-2", payload=lock)) == _plain_message("G-2", lock)
    assert all("PIN" not in key for key in command_steps._ENCODED)


async def test_a_long_sqlite_write_transaction_is_logged(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    if not db.is_sqlite:
        pytest.skip("the write queue is SQLite's")
    db.slow_seconds = 0.05

    async def hold() -> None:
        async with db.transaction():
            await asyncio.sleep(0.1)

    with caplog.at_level(logging.WARNING, logger="mdm.db.engine"):
        await asyncio.gather(hold(), hold())
    # Both waited or held past the threshold; one line per interval.
    lines = [r.getMessage() for r in caplog.records if "write transaction" in r.getMessage()]
    assert len(lines) == 1 and "held it" in lines[0], lines


async def test_an_inline_sqlite_transaction_needs_no_hop_and_still_rolls_back(
    db: Database, hops: collections.Counter[str]
) -> None:
    if not db.is_sqlite:
        pytest.skip("inline statements are SQLite's")
    async with db.session() as session:  # warm the pool
        await session.scalar(select(Device.id).limit(1))
    hops.clear()
    async with db.transaction(inline=True) as session:
        session.add(Event(uuid="i-1", type="t", severity="info", body={}))
        await session.flush()
        assert await session.scalar(select(Event.uuid).where(Event.uuid == "i-1")) == "i-1"
    with pytest.raises(IntegrityError):
        async with db.transaction(inline=True) as session:
            session.add(Event(uuid="i-2", type="t", severity="info", body={}))
            await session.flush()
            session.add(Event(uuid="i-1", type="t", severity="info", body={}))  # unique: refused
            await session.flush()
    assert hops == {}
    async with db.session() as session:  # the driver hops again outside inline transactions
        assert list((await session.scalars(select(Event.uuid))).all()) == ["i-1"]
    assert hops == {"_run": 1}


async def test_an_inline_statement_never_waits_for_a_lock_on_the_loop(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("inline statements are SQLite's")
    async with db.session() as session:  # warm the pool, find the file
        await session.scalar(select(Device.id).limit(1))
    path = db.engine.url.database
    assert path
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, other.execute, "COMMIT")  # runs only if the loop is not blocked
    started = loop.time()
    async with db.transaction(inline=True) as session:
        session.add(Event(uuid="w-1", type="t", severity="info", body={}))
        await session.flush()
    assert 0.15 < loop.time() - started < 5
    other.close()
    async with db.transaction(inline=True) as session:  # and inline again afterwards
        session.add(Event(uuid="w-2", type="t", severity="info", body={}))
    async with db.session() as session:
        assert sorted((await session.scalars(select(Event.uuid))).all()) == ["w-1", "w-2"]


async def test_a_cold_polls_look_ups_run_inline_on_sqlite(
    db: Database, hops: collections.Counter[str], phone: Phone
) -> None:
    """The binding look-up and the queue probe of a cold poll (read-only, outside a transaction)
    run on the loop's thread: a thread hand-off each cost more than the statement (issue 12:
    cold first polls)."""
    if not db.is_sqlite:
        pytest.skip("inline statements are SQLite's")
    device_id = await device_id_of(db, phone.udid)
    fingerprint = phone.cert.fingerprint(hashes.SHA256())
    hops.clear()
    bound = await ios_store.bound_device(db.engine, fingerprint)
    assert bound is not None and bound.id == device_id
    assert await ios_store.peek_next_command(db.engine, device_id) is None
    assert hops == {}
    await queue_command(db, device_id, {"RequestType": "DeviceLock"})
    hops.clear()
    assert await ios_store.peek_next_command(db.engine, device_id) is not None
    assert hops == {}
