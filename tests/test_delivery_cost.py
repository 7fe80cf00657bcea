"""The delivery round trip's cost (issue 12 item 2): the hottest statements run as ``Prepared``
statements (the session's DB-API connection, no SQLAlchemy execution layer) and write exactly what
SQLAlchemy wrote; a first delivery is one statement on PostgreSQL; an answer that takes the
device's last queued command does not look for a next one."""

from __future__ import annotations

import plistlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ios_support import Phone, device_id_of, queue_command
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError

from mdm.core import commands, events, store_delivery
from mdm.core.event_types import COMMAND_DELIVERED
from mdm.db import prepared
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Event, utcnow
from mdm.server.runtime import Server


class Statements:
    """Statements run by the engines, ``Prepared`` ones included (they fire the event too)."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.engines: list[Any] = []

    def _seen(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.sql.append(statement)
        self.engines.append(conn.engine)

    @property
    def total(self) -> int:
        return len(self.sql)

    def on(self, db: Database) -> int:
        """Statements run by ``db``'s engine only (not the running server's workers)."""
        return sum(1 for engine in self.engines if engine is db.engine.sync_engine)

    def reset(self) -> None:
        self.sql.clear()
        self.engines.clear()


@pytest.fixture
def statements(server: Server, db: Database) -> Iterator[Statements]:
    counted = Statements()
    engines = [server.ctx.db.engine.sync_engine, db.engine.sync_engine]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", counted._seen)
    yield counted
    for engine in engines:
        event.remove(engine, "before_cursor_execute", counted._seen)


def _offered(response: httpx.Response) -> str | None:
    assert response.status_code == 200, response.text
    return plistlib.loads(response.content)["CommandUUID"] if response.content else None


async def _journal(db: Database, guid: str) -> list[str]:
    async with db.session() as session:
        rows = await session.scalars(
            select(CommandJournalEntry.status)
            .join(Command, Command.id == CommandJournalEntry.command_id)
            .where(Command.guid == guid)
            .order_by(CommandJournalEntry.id)
        )
        return list(rows.all())


async def test_prepared_rows_read_back_as_sqlalchemy_wrote_them(db: Database, phone: Phone) -> None:
    """The same journal entry and outbox row, once through SQLAlchemy and once ``Prepared``:
    every column reads back equal (timestamps aware UTC, JSON as a document)."""
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "ProfileList"})
    at = utcnow()
    async with db.session() as session:
        command = await session.scalar(select(Command).where(Command.guid == guid))
        assert command is not None
    body: dict[str, Any] = {"command": guid, "command_type": "Raw"}
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for way in ("sqlalchemy", "prepared"):
        values = {**events.event_values(COMMAND_DELIVERED, device_id=device_id, **body), "created_at": at}
        async with db.transaction() as session:
            journal = {"command_id": command.id, "status": f"by {way}", "detail": "d\u00e9tail", "at": at}
            if way == "sqlalchemy":
                await session.execute(insert(CommandJournalEntry), journal)
                await session.execute(insert(Event), values)
            else:
                await store_delivery._INSERT_JOURNAL.execute(session, journal)
                await prepared.Prepared(insert(Event), list(values)).execute(session, values)
        async with db.session() as session:
            entry = await session.scalar(
                select(CommandJournalEntry).where(CommandJournalEntry.status == f"by {way}")
            )
            outbox = await session.scalar(select(Event).where(Event.uuid == values["uuid"]))
            assert entry is not None and outbox is not None
            rows.append(
                (
                    {"at": entry.at, "detail": entry.detail, "command_id": entry.command_id},
                    {k: getattr(outbox, k) for k in values if k != "uuid"},
                )
            )
    assert rows[0] == rows[1]
    assert rows[1][0]["at"] == at and rows[1][0]["at"].tzinfo is not None
    assert rows[1][1]["body"] == body


async def test_a_prepared_statement_raises_what_sqlalchemy_raises(db: Database) -> None:
    """A constraint violation is SQLAlchemy's IntegrityError, and the transaction rolls back."""
    # (A journal row without a status: since migration 0020 the journal has no foreign key.)
    no_status = {"command_id": 987654321, "status": None, "detail": None, "at": utcnow()}
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await store_delivery._INSERT_JOURNAL.execute(session, no_status)
    async with db.session() as session:
        assert (await session.scalars(select(CommandJournalEntry.id))).all() == []


async def test_answering_the_last_command_looks_for_no_next_one(
    ios: httpx.AsyncClient, phone: Phone, db: Database, statements: Statements
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert _offered(await phone.report(ios)) == guid
    statements.reset()
    assert _offered(await phone.report(ios, "Acknowledged", guid)) is None
    # No claim of a next command after the completion (the queue is known to be empty).
    assert not [s for s in statements.sql if "commands.attempts +" in s]
    assert await _journal(db, guid) == ["processing", "delivered", "completed"]
    async with db.session() as session:
        left = select(CommandQueueEntry).where(CommandQueueEntry.device_id == device_id)
        assert await session.scalar(left) is None


async def test_a_command_queued_behind_is_still_handed_out_with_the_answer(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    first = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block", priority=9)
    second = await queue_command(db, device_id, {"RequestType": "ProfileList"})
    assert _offered(await phone.report(ios)) == first
    assert _offered(await phone.report(ios, "Acknowledged", first)) == second
    assert _offered(await phone.report(ios, "Acknowledged", second, ProfileList=[])) is None


async def test_a_deferred_command_stays_for_the_next_exchange(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    """One command deferred by NotNow, another answered: the answer offers nothing more in this
    exchange (the deferred one waits), and the next Idle offers the deferred one."""
    device_id = await device_id_of(db, phone.udid)
    busy = await queue_command(db, device_id, {"RequestType": "ProfileList"}, priority=9)
    other = await queue_command(db, device_id, {"RequestType": "SecurityInfo"}, type_="Locate")
    assert _offered(await phone.report(ios)) == busy
    assert _offered(await phone.report(ios, "NotNow", busy)) == other
    assert _offered(await phone.report(ios, "Acknowledged", other, SecurityInfo={})) is None
    assert _offered(await phone.report(ios)) == busy


async def test_a_replayed_answer_changes_nothing(ios: httpx.AsyncClient, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert _offered(await phone.report(ios)) == guid
    assert _offered(await phone.report(ios, "Acknowledged", guid)) is None
    again = await phone.report(ios, "Acknowledged", guid)
    assert again.status_code == 400
    assert await _journal(db, guid) == ["processing", "delivered", "completed"]


async def test_a_first_delivery_writes_in_flight_journal_and_event(
    db: Database, phone: Phone, statements: Statements
) -> None:
    """``delivered``: the queue row in flight, the journal entry, the event; a redelivery (after
    NotNow) only the first. PostgreSQL: one statement for the three."""
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "ProfileList"})
    for attempt in (1, 2):
        async with db.transaction() as session:
            found, command = await commands.claim_next(session, device_id, ready_only=False)
            assert found and command is not None and command.attempts == attempt
            statements.reset()
            await commands.delivered(session, command)
            written = statements.on(db)
        async with db.session() as session:
            entry = await session.get(CommandQueueEntry, command.id)
            assert entry is not None and entry.in_flight and entry.not_before is None
            delivered = (
                await session.scalars(
                    select(Event.body).where(Event.type == "command_delivered", Event.device_id == device_id)
                )
            ).all()
        assert delivered == [{"command": guid, "command_type": "Raw"}]
        if attempt == 1:
            assert written == (1 if not db.is_sqlite else 3)
        else:
            assert written == 1
    assert await _journal(db, guid) == ["processing", "delivered"]


def test_prepared_statements_refuse_expanding_parameters() -> None:
    from sqlalchemy.dialects import sqlite

    stmt = select(Command.id).where(Command.guid.in_([str(uuid.uuid4())]))
    with pytest.raises(ValueError, match="expanding"):
        prepared.Prepared(stmt).form(sqlite.dialect())


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "other-driver"])
async def test_a_claimed_command_reads_as_the_orm_reads_it(
    db: Database, phone: Phone, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``claim_next`` and ``lock_by_guid`` build the command from ``Prepared`` rows: every
    attribute equals what the ORM loads afterwards (JSON documents, aware timestamps, booleans).
    A driver ``Prepared`` does not know runs the statements through SQLAlchemy, alike."""
    if not direct:
        monkeypatch.setattr(prepared, "DIRECT_DRIVERS", frozenset())
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "ProfileList", "Nested": {"a": [1, 2]}})
    columns = [c.key for c in Command.__table__.columns]
    async with db.transaction() as session:
        found, claimed = await commands.claim_next(session, device_id, ready_only=False)
        assert found and claimed is not None
        seen = {name: getattr(claimed, name) for name in columns}
    async with db.transaction() as session:
        locked = await commands.lock_by_guid(session, guid)
        assert locked is not None
        relocked = {name: getattr(locked, name) for name in columns}
    async with db.session() as session:
        loaded = await session.scalar(select(Command).where(Command.guid == guid))
        assert loaded is not None
        expected = {name: getattr(loaded, name) for name in columns}
    assert seen == expected and relocked == expected
    assert expected["payload"]["Nested"] == {"a": [1, 2]} and expected["active"] is True
    assert expected["delivered_at"] is not None and expected["delivered_at"].tzinfo is not None
