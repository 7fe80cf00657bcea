"""The single-device enqueue writes by statements only: no ORM unit of work at commit (its flush of
the queue row and the audit event was a fifth of the enqueue's CPU), and on PostgreSQL the whole
write (command, journal, queue row, both events, the replicas' NOTIFY) is one statement."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mdm.core import audit
from mdm.core.audit import Action, Actor
from mdm.core.command_service import CommandService
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
