"""The single-device enqueue writes by statements only: no ORM unit of work at commit (its flush of
the queue row and the audit event was a fifth of the enqueue's CPU), and on PostgreSQL the whole
write (command, journal, queue row, both events, the replicas' NOTIFY) is one statement."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mdm.core import audit
from mdm.core.audit import Action, Actor
from mdm.core.command_service import CommandService
from mdm.core.errors import Conflict, NotFound
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.audit_context import PENDING
from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, Device, Event, Protocol
from mdm.ios.plugin import TRANSLATOR

PG_URL = os.environ.get("MDM_TEST_DATABASE_URL", "")
TRANSLATORS = Translators()
TRANSLATORS.register(Protocol.IOS, TRANSLATOR)


async def _device(db: Database) -> int:
    async with db.transaction() as session:
        device = Device(protocol=Protocol.IOS.value, identifier="UDID-S", os_name="iOS", model="iPhone15,3")
        session.add(device)
        await session.flush()
        return device.id


@contextmanager
def _watched(db: Database) -> Iterator[tuple[list[int], list[str]]]:
    flushes: list[int] = []
    statements: list[str] = []

    def flushed(session: Session, _context: Any, _instances: Any) -> None:
        flushes.append(len(session.new) + len(session.dirty))

    def executed(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql.split(None, 1)[0].upper())

    event.listen(Session, "before_flush", flushed)
    event.listen(db.engine.sync_engine, "before_cursor_execute", executed)
    try:
        yield flushes, statements
    finally:
        event.remove(Session, "before_flush", flushed)
        event.remove(db.engine.sync_engine, "before_cursor_execute", executed)


async def test_the_enqueue_flushes_no_orm_object(db: Database) -> None:
    dev = await _device(db)
    action = Action(Actor("tester", "api", "127.0.0.1", token_id=1), "send_command", method="POST",
                    route="/api/v1/devices/{id}/commands", target={"id": dev})
    pending = audit.pending(action)
    token = PENDING.set(pending)
    try:
        with _watched(db) as (flushes, statements):
            await CommandService(db, TRANSLATORS, Pushers()).send(dev, "Block", {}, by="tester")
    finally:
        pending.closed = True
        PENDING.reset(token)
    assert flushes == []
    assert pending.written
    writes = [s for s in statements if s not in ("SELECT", "BEGIN", "COMMIT")]
    if PG_URL:
        assert writes == ["WITH"]  # command, journal, queue row, events, NOTIFY: one statement
    async with db.session() as session:
        types = list(await session.scalars(select(Event.type).order_by(Event.id)))
        queued = list(await session.scalars(select(CommandQueueEntry.device_id)))
    assert types == ["command_created", "admin_action"]  # in the order the ORM path wrote them
    assert queued == [dev]


@pytest.mark.skipif(not PG_URL, reason="statements outside a transaction block: PostgreSQL")
async def test_postgresql_writes_the_common_enqueue_outside_a_transaction_block(db: Database) -> None:
    """The device's facts, then the one statement that writes it all: no BEGIN, no COMMIT."""
    dev = await _device(db)
    svc = CommandService(db, TRANSLATORS, Pushers())
    began: list[object] = []
    record = began.append
    event.listen(db.engine.sync_engine, "begin", record)
    try:
        with _watched(db) as (flushes, statements):
            command, first = await svc.send(dev, "Block", {}, by="admin")
    finally:
        event.remove(db.engine.sync_engine, "begin", record)
    assert (statements, began, flushes) == (["SELECT", "WITH"], [], [])
    assert (first.command_id, first.status, first.detail) == (command.id, "processing", "queued")
    # Refusals are answered by the transactional path, as before; nothing more is written.
    with pytest.raises(Conflict) as busy:
        await svc.send(dev, "Block", {}, by="admin")
    assert busy.value.details == {"command": command.guid}
    with pytest.raises(NotFound):
        await svc.send(dev + 1000, "Block", {}, by="admin")
    async with db.session() as session:
        assert list(await session.scalars(select(CommandQueueEntry.command_id))) == [command.id]
        assert list(await session.scalars(select(Event.type))) == ["command_created"]


def _dispatching(db: Database, clock: Any = None) -> Pushers:
    """Pushers with the push dispatcher as iOS's pusher (an ``OwingPusher``, as with APNs)."""
    from push_dispatch_support import ScriptedTransport

    from mdm.push.config import PushConfig
    from mdm.push.dispatcher import PushDispatcher

    pushers = Pushers()
    extra = {"clock": clock} if clock is not None else {}
    pushers.register(Protocol.IOS, PushDispatcher(
        db, PushConfig(), {Protocol.IOS: ScriptedTransport()}, **extra
    ))
    return pushers


@pytest.mark.skipif(not PG_URL, reason="statements outside a transaction block: PostgreSQL")
async def test_an_owed_wake_up_joins_the_one_statement(db: Database) -> None:
    """With APNs configured (the push dispatcher owes wake-ups as rows), the enqueue is still the
    facts and one statement outside a transaction block: its wake-up row is part of it."""
    from push_dispatch_support import add_device, wakeups

    dev = await add_device(db, "pushed", token="ab" * 32)
    began: list[object] = []
    record = began.append
    event.listen(db.engine.sync_engine, "begin", record)
    try:
        with _watched(db) as (_, statements):
            await CommandService(db, TRANSLATORS, _dispatching(db)).send(dev, "Block", {}, by="admin")
    finally:
        event.remove(db.engine.sync_engine, "begin", record)
    assert (statements, began) == (["SELECT", "WITH"], [])
    assert list(await wakeups(db)) == [dev]


@pytest.mark.parametrize("existing", [False, True])
async def test_the_wake_up_row_is_the_one_the_transactional_path_writes(
    db: Database, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """The same row either way: a new one, or an owed re-push moved earlier and counted again."""
    from push_dispatch_support import Clock, add_device, wakeups

    from mdm.core import command_service
    from mdm.push.tables import REPUSH, PushWakeup

    clock = Clock()
    later = clock.now + timedelta(seconds=60)
    svc = CommandService(db, TRANSLATORS, _dispatching(db, clock))
    rows = []
    for direct in (True, False):
        dev = await add_device(db, f"pushed-{direct}", token="ab" * 32)
        if existing:
            async with db.transaction() as session:
                session.add(PushWakeup(device_id=dev, due_at=later, reason=REPUSH, attempts=3,
                                       requests=2, created_at=clock.now, last_result="sent"))
        monkeypatch.setattr(command_service, "DIRECT", direct)
        await svc.send(dev, "Block", {}, by="admin")
        row = (await wakeups(db))[dev]
        rows.append((row.due_at, row.reason, row.attempts, row.requests, row.created_at,
                     row.last_attempt_at, row.last_result))
    assert rows[0] == rows[1]
    assert rows[0][1:4] == ("command", 0, 3 if existing else 1)


async def test_no_wake_up_row_for_a_refused_or_unpushable_enqueue(db: Database) -> None:
    """A conflict and an unknown device write nothing more, a device without a token no row."""
    from push_dispatch_support import add_device, wakeups

    svc = CommandService(db, TRANSLATORS, _dispatching(db))
    dev = await add_device(db, "pushed", token="ab" * 32)
    silent = await add_device(db, "silent", token=None)
    command, _ = await svc.send(dev, "Block", {}, by="admin")
    await svc.send(silent, "Block", {}, by="admin")
    with pytest.raises(Conflict) as busy:
        await svc.send(dev, "Block", {}, by="admin")
    assert busy.value.details == {"command": command.guid}
    with pytest.raises(NotFound):
        await svc.send(dev + silent + 1000, "Block", {}, by="admin")
    owed = await wakeups(db)
    assert list(owed) == [dev]
    assert owed[dev].requests == 1  # the refused enqueue owed nothing more


@pytest.mark.skipif(not PG_URL, reason="statements outside a transaction block: PostgreSQL")
async def test_a_failing_wake_up_part_takes_the_command_back(db: Database) -> None:
    """The wake-up is part of the command's statement: if it fails, nothing is written."""
    from push_dispatch_support import add_device, wakeups
    from sqlalchemy import func, insert, literal
    from sqlalchemy.exc import IntegrityError

    from mdm.core.push import OwedPart
    from mdm.push.tables import PushWakeup

    def unknown_device(ids: Any) -> Any:  # a row for no device: the foreign key refuses it
        columns = ["device_id", "due_at", "reason", "attempts", "requests", "created_at"]
        source = select(literal(10**9), func.now(), literal("x"), literal(0), literal(1), func.now())
        return insert(PushWakeup).from_select(columns, source.where(ids.exists()))

    pushers = _dispatching(db)
    dispatcher: Any = pushers.get(Protocol.IOS)
    dispatcher.owed_part = lambda reason, dialect: OwedPart(unknown_device, {})
    dev = await add_device(db, "pushed", token="ab" * 32)
    with pytest.raises(IntegrityError):
        await CommandService(db, TRANSLATORS, pushers).send(dev, "Block", {}, by="admin")
    async with db.session() as session:
        assert list(await session.scalars(select(CommandQueueEntry.command_id))) == []
        assert list(await session.scalars(select(Event.type))) == []
    assert await wakeups(db) == {}
