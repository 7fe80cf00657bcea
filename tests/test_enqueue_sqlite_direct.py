"""SQLite's single-device enqueue without SQLAlchemy's session (``mdm.core.enqueue_sqlite``, issue
12: a command with the admin API's enqueue in the loop): the common case is one
``sqlite_direct`` transaction writing exactly the rows, events and audit of the transactional
path (with the push dispatcher's wake-up row when APNs is configured); a conflict, an unknown
device, a translation that reads the whole device or a write lock held by another process take
the transactional path, which answers as before."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mdm.core import audit, command_enqueue, command_service, events
from mdm.core.audit import Action, Actor
from mdm.core.command_service import CommandService
from mdm.core.errors import Conflict, NotFound
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.audit_context import PENDING, PendingAudit
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Device, Event, Protocol
from mdm.ios.plugin import TRANSLATOR

TRANSLATORS = Translators()
TRANSLATORS.register(Protocol.IOS, TRANSLATOR)
NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _sqlite_only(config: Any) -> None:
    if not str(config.database_url).startswith("sqlite"):
        pytest.skip("SQLite's direct enqueue (PostgreSQL has mdm.core.enqueue_direct)")


async def _device(db: Database, udid: str) -> int:
    async with db.transaction() as session:
        device = Device(protocol=Protocol.IOS.value, identifier=udid, os_name="iOS", model="iPhone15,3")
        session.add(device)
        await session.flush()
        return device.id


@contextmanager
def _request(device_id: int) -> Iterator[PendingAudit]:
    """An admin API request in progress (its audit pending), as the framework runs it."""
    action = Action(Actor("tester", "api", "127.0.0.1", token_id=1), "send_command", method="POST",
                    route="/api/v1/devices/{id}/commands", target={"id": device_id}, request_id="rid-1")
    pending = audit.pending(action)
    token = PENDING.set(pending)
    try:
        yield pending
    finally:
        pending.closed = True
        PENDING.reset(token)


@contextmanager
def _watched(db: Database) -> Iterator[tuple[list[str], list[int], list[int]]]:
    """The statements run, the ORM flushes and the pool checkouts."""
    statements: list[str] = []
    flushes: list[int] = []
    checkouts: list[int] = []

    def executed(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(" ".join(sql.split()[:3]).upper())

    def flushed(*_args: Any) -> None:
        flushes.append(1)

    def checked_out(*_args: Any) -> None:
        checkouts.append(1)

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", executed)
    event.listen(Session, "before_flush", flushed)
    event.listen(engine.pool, "checkout", checked_out)
    try:
        yield statements, flushes, checkouts
    finally:
        event.remove(engine, "before_cursor_execute", executed)
        event.remove(Session, "before_flush", flushed)
        event.remove(engine.pool, "checkout", checked_out)


async def _send(
    db: Database, device_id: int, type_name: str = "Block", pushers: Pushers | None = None
) -> Any:
    with _request(device_id) as pending:
        command, first = await CommandService(db, TRANSLATORS, pushers or Pushers()).send(
            device_id, type_name, {}, by="tester"
        )
    return command, first, pending


async def _rows(db: Database, device_id: int) -> dict[str, Any]:
    """Every row the enqueue wrote for ``device_id``, without ids, the GUID and the device."""
    async with db.session() as session:
        commands = list(await session.scalars(select(Command).where(Command.device_id == device_id)))
        ids = [c.id for c in commands]
        journal = list(await session.scalars(
            select(CommandJournalEntry).where(CommandJournalEntry.command_id.in_(ids))
            .order_by(CommandJournalEntry.id)))
        queue = list(await session.scalars(
            select(CommandQueueEntry).where(CommandQueueEntry.device_id == device_id)))
        evs = list(await session.scalars(select(Event).order_by(Event.id)))
    guids = {c.guid for c in commands}

    def columns(row: Any, *skip: str) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in skip}

    def payload(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: "<dev>" if k == "id" and v == device_id else payload(v) for k, v in data.items()}
        if isinstance(data, list):
            return [payload(v) for v in data]
        if isinstance(data, str) and data in guids:
            return "<guid>"
        return data

    mine = [e for e in evs if e.device_id == device_id or (e.body.get("target") or {}).get("id") == device_id]
    return {
        "commands": [columns(c, "id", "guid", "device_id") for c in commands],
        "journal": [columns(j, "id", "command_id") for j in journal],
        "queue": [columns(q, "command_id", "device_id") for q in queue],
        "events": [{**columns(e, "id", "uuid", "device_id", "body"), "body": payload(e.body)} for e in mine],
    }


async def test_the_common_enqueue_takes_no_session(db: Database) -> None:
    dev = await _device(db, "UDID-D")
    await _send(db, await _device(db, "UDID-WARM"))  # opens the kept connection
    with _watched(db) as (statements, flushes, checkouts):
        command, first, pending = await _send(db, dev)
    assert pending.written
    # the facts, then command, journal, command_created, queue row, admin_action
    assert statements[0].startswith("SELECT") and statements[1:] == [
        "INSERT INTO COMMANDS", "INSERT INTO COMMAND_JOURNAL", "INSERT INTO EVENTS",
        "INSERT INTO COMMAND_QUEUE", "INSERT INTO EVENTS",
    ], statements
    assert (flushes, checkouts) == ([], [])
    assert (first.command_id, first.status, first.detail) == (command.id, "processing", "queued")
    rows = await _rows(db, dev)
    assert [e["type"] for e in rows["events"]] == ["command_created", "admin_action"]
    assert len(rows["queue"]) == 1 and rows["commands"][0]["status"] == "processing"


@pytest.mark.parametrize("type_name", ["Block", "RefreshDeviceInfo"])
async def test_both_paths_write_the_same_rows(
    db: Database, monkeypatch: pytest.MonkeyPatch, type_name: str
) -> None:
    """Column by column: the command, its journal entry, its queue row, both events."""
    monkeypatch.setattr(command_enqueue, "utcnow", lambda: NOW)
    monkeypatch.setattr(events, "utcnow", lambda: NOW, raising=False)
    await _send(db, await _device(db, "UDID-WARM"))  # opens the kept connection
    found = []
    for direct in (True, False):
        dev = await _device(db, f"UDID-{direct}")
        monkeypatch.setattr(command_service, "DIRECT", direct)
        with _watched(db) as (_, flushes, checkouts):
            _, first, pending = await _send(db, dev, type_name)
        assert pending.written
        assert (bool(flushes or checkouts)) is (not direct)  # the direct path took no session
        found.append((await _rows(db, dev), (first.status, first.detail, first.at)))
    assert found[0] == found[1]
    assert found[0][0]["events"][1]["body"]["request_id"] == "rid-1"


async def test_a_conflict_and_an_unknown_device_are_answered_as_before(db: Database) -> None:
    dev = await _device(db, "UDID-C")
    command, _, _ = await _send(db, dev)
    before = await _rows(db, dev)
    with pytest.raises(Conflict) as busy:
        await _send(db, dev)
    assert busy.value.details == {"command": command.guid}
    assert await _rows(db, dev) == before  # nothing more written, no audit of the refusal
    with pytest.raises(NotFound):
        await _send(db, dev + 1000)
    async with db.session() as session:
        assert list(await session.scalars(select(Event.type).order_by(Event.id))) == [
            "command_created", "admin_action"
        ]


class _PerDevice:
    """A translator whose translation reads the whole device (no ``bulk_key``)."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def translate(self, command_type: str, args: dict[str, Any], device: Device) -> dict[str, Any]:
        self.seen.append(device.identifier)  # a column the device's facts do not hold
        return {"RequestType": "DeviceLock"}


async def test_a_per_device_translation_takes_the_transactional_path(db: Database) -> None:
    dev = await _device(db, "UDID-P")
    await _send(db, await _device(db, "UDID-WARM"))
    translator = _PerDevice()
    translators = Translators()
    translators.register(Protocol.IOS, translator)
    with _watched(db) as (_, _flushes, checkouts), _request(dev) as pending:
        _, first = await CommandService(db, translators, Pushers()).send(dev, "Block", {}, by="tester")
    assert checkouts and translator.seen == ["UDID-P"]  # the session's path, the device loaded
    assert pending.written and first.status == "processing"
    rows = await _rows(db, dev)
    assert [e["type"] for e in rows["events"]] == ["command_created", "admin_action"]
    assert rows["commands"][0]["payload"] == {"RequestType": "DeviceLock"}


def _dispatching(db: Database) -> Pushers:
    """iOS pushed by the push dispatcher (an ``OwingPusher``, as with APNs configured)."""
    from push_dispatch_support import ScriptedTransport

    from mdm.push.config import PushConfig
    from mdm.push.dispatcher import PushDispatcher

    pushers = Pushers()
    pushers.register(Protocol.IOS, PushDispatcher(db, PushConfig(), {Protocol.IOS: ScriptedTransport()}))
    return pushers


async def test_an_owed_wake_up_is_a_statement_of_the_direct_transaction(db: Database) -> None:
    """With APNs configured, the push dispatcher's wake-up row commits in the enqueue's one
    ``sqlite_direct`` transaction, after the command's rows: still no session."""
    from push_dispatch_support import add_device, wakeups

    pushers = _dispatching(db)
    dev = await add_device(db, "pushed", token="ab" * 32)
    silent = await add_device(db, "silent", token=None)
    await _send(db, await _device(db, "UDID-WARM"), pushers=pushers)  # opens the kept connection
    with _watched(db) as (statements, flushes, checkouts):
        _, _, pending = await _send(db, dev, pushers=pushers)
        await _send(db, silent, pushers=pushers)
    assert pending.written
    assert statements[1:7] == [
        "INSERT INTO COMMANDS", "INSERT INTO COMMAND_JOURNAL", "INSERT INTO EVENTS",
        "INSERT INTO COMMAND_QUEUE", "INSERT INTO EVENTS", "INSERT INTO PUSH_WAKEUPS",
    ], statements
    assert (flushes, checkouts) == ([], [])
    owed = await wakeups(db)
    assert list(owed) == [dev]  # a device without a token is owed nothing
    assert (owed[dev].reason, owed[dev].requests) == ("command", 1)


async def test_an_owed_wake_up_fails_with_its_command(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wake-up is a statement of the command's transaction: if it fails, nothing is written."""
    from push_dispatch_support import add_device, wakeups
    from sqlalchemy import func, insert, literal
    from sqlalchemy.exc import IntegrityError

    from mdm.core.push import OwedPart
    from mdm.push.tables import PushWakeup

    def unknown_device(ids: Any) -> Any:  # a row for no device: the foreign key refuses it
        columns = ["device_id", "due_at", "reason", "attempts", "requests", "created_at"]
        now = func.datetime()
        source = select(literal(10**9), now, literal("x"), literal(0), literal(1), now)
        return insert(PushWakeup).from_select(columns, source.where(ids.exists()))

    pushers = _dispatching(db)
    dispatcher: Any = pushers.get(Protocol.IOS)
    monkeypatch.setattr(dispatcher, "owed_part", lambda reason, dialect: OwedPart(unknown_device, {}))
    dev = await add_device(db, "pushed", token="ab" * 32)
    await _send(db, await _device(db, "UDID-WARM"))  # opens the kept connection
    with pytest.raises(IntegrityError), _watched(db) as (_, flushes, _):
        await _send(db, dev, pushers=pushers)
    assert flushes == []  # it failed on the direct path
    async with db.session() as session:
        assert list(await session.scalars(select(Command.id).where(Command.device_id == dev))) == []
        assert [e.type for e in await session.scalars(select(Event)) if e.device_id == dev] == []
    assert await wakeups(db) == {}


async def test_the_enqueue_waits_on_its_transactional_path_while_another_process_writes(db: Database) -> None:
    dev = await _device(db, "UDID-L")
    await _send(db, await _device(db, "UDID-WARM"))
    other = sqlite3.connect(str(db.engine.url.database), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as the push worker process
    try:
        sent = asyncio.create_task(_send(db, dev))
        await asyncio.sleep(0.3)
        assert not sent.done()  # waiting for the lock (aiosqlite's thread), nothing written
    finally:
        other.rollback()
        other.close()
    _, _, pending = await sent
    assert pending.written
    rows = await _rows(db, dev)
    assert len(rows["commands"]) == 1 and len(rows["queue"]) == 1
    assert [e["type"] for e in rows["events"]] == ["command_created", "admin_action"]


async def test_a_failing_statement_takes_everything_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit row fails (not null): the command, its journal, queue row and event go too."""
    from mdm.core import store_enqueue_sqlite

    dev = await _device(db, "UDID-F")
    real = store_enqueue_sqlite.insert_command

    def broken(tx: Any, values: Any, journal: Any, ev: Any, audit_row: Any, owed: Any) -> int | None:
        return real(tx, values, journal, ev, {**(audit_row or ev), "type": None}, owed)

    monkeypatch.setattr(store_enqueue_sqlite, "insert_command", broken)
    with pytest.raises(Exception, match="NOT NULL"):
        await _send(db, dev)
    rows = await _rows(db, dev)
    assert rows == {"commands": [], "journal": [], "queue": [], "events": []}
