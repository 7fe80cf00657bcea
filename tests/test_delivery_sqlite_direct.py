"""SQLite's command round trip without SQLAlchemy's session (``mdm.db.sqlite_direct``,
``mdm.ios.channel_sqlite``; issue 12, a Block round trip <= 2 ms of server CPU): the write
transaction commits or rolls back as a session's would, declines (nothing written) when another
process holds SQLite's write lock or the task already holds the write queue, and the channel
then takes its transactional path with the same outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ios_support import Phone, command_records, device_id_of, offered, queue_command
from sql_capture import in_a_worker
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from mdm.core import events, in_flight
from mdm.core.event_types import COMMAND_DELIVERED
from mdm.core.store_events import _INSERT_ROW
from mdm.db import sqlite_direct
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.server.runtime import Server


@pytest.fixture(autouse=True)
def _sqlite_only(config: Any) -> None:
    if not str(config.database_url).startswith("sqlite"):
        pytest.skip("SQLite's direct write transactions (PostgreSQL has mdm.core.delivery_direct)")


def _event() -> dict[str, Any]:
    return events.event_values(COMMAND_DELIVERED, device_id=None, command="x", command_type="Block")


async def _events(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


def _locker(db: Database) -> sqlite3.Connection:
    """Another connection (as the push worker process) holding SQLite's write lock."""
    other = sqlite3.connect(str(db.engine.url.database), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_direct_transaction_commits_and_rolls_back(db: Database) -> None:
    before = await _events(db)
    async with sqlite_direct.transaction(db) as tx:
        assert tx is not None
        tx.execute(_INSERT_ROW, _event())
    assert await _events(db) == before + 1
    with pytest.raises(RuntimeError):
        async with sqlite_direct.transaction(db) as tx:
            assert tx is not None
            tx.execute(_INSERT_ROW, _event())
            raise RuntimeError("undone")
    async with sqlite_direct.transaction(db) as tx:
        assert tx is not None
        tx.execute(_INSERT_ROW, _event())
        tx.rollback()
    assert await _events(db) == before + 1
    # A failed statement is reported as SQLAlchemy reports it and undoes the transaction.
    with pytest.raises(IntegrityError):
        async with sqlite_direct.transaction(db) as tx:
            assert tx is not None
            tx.execute(_INSERT_ROW, _event())
            tx.execute(_INSERT_ROW, {**_event(), "type": None})
    assert await _events(db) == before + 1


async def test_a_direct_transaction_declines_while_another_process_holds_the_lock(db: Database) -> None:
    await _events(db)  # the schema is there
    other = _locker(db)
    try:
        async with sqlite_direct.transaction(db) as tx:
            assert tx is None  # at once: never sleeps on the event loop's thread
    finally:
        other.rollback()
        other.close()
    async with sqlite_direct.transaction(db) as tx:
        assert tx is not None


async def test_a_direct_transaction_declines_inside_the_tasks_write_transaction(db: Database) -> None:
    async with db.transaction(inline=True):
        async with sqlite_direct.transaction(db) as tx:
            assert tx is None  # the write queue is this task's already: no second writer


@pytest.fixture
def statements(server: Server) -> Iterator[list[str]]:
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "command" in sql or "events" in sql:
            seen.append(sql)

    engine = server.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", statement)
    yield seen
    event.remove(engine, "before_cursor_execute", statement)


async def test_a_block_round_trip_takes_no_pooled_session(
    server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database, statements: list[str]
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid  # opens the kept connection
    await phone.report(ios, "Acknowledged", guid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    checkouts: list[int] = []

    def checked_out(*_args: object) -> None:
        if not in_a_worker():  # the server's workers take connections of their own at any time
            checkouts.append(1)

    pool = server.ctx.db.engine.sync_engine.pool
    event.listen(pool, "checkout", checked_out)
    statements.clear()
    try:
        assert offered(await phone.report(ios)) == guid
        writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
        # claim, in flight, the journal entry, the event
        assert len(writes) == 4, writes
        statements.clear()
        assert offered(await phone.report(ios, "Acknowledged", guid)) is None
        # take (guarded), finish, journal, event: no read of the command
        assert len(statements) == 4, statements
    finally:
        event.remove(pool, "checkout", checked_out)
    assert checkouts == []  # the kept connection: no session, no pool checkout
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed" and command.active is None and command.payload == {}
    assert command.attempts == 1 and command.result_info == "Acknowledged"
    assert journal == ["processing", "delivered", "completed"]
    assert types[-2:] == ["command_delivered", "command_completed"]  # this command's


async def test_the_channel_waits_on_its_transactional_path_while_another_process_writes(
    server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database, statements: list[str]
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    other = _locker(server.ctx.db)
    try:
        polled = asyncio.create_task(phone.report(ios))
        await asyncio.sleep(0.3)
        assert not polled.done()  # waiting for the lock (on aiosqlite's thread), nothing written
    finally:
        other.rollback()
        other.close()
    assert offered(await polled) == guid
    # The answer's copy of the command is still there for the transactional path's write.
    assert in_flight.take(server.ctx.db.engine, guid) is not None
    assert offered(await phone.report(ios)) == guid  # copy used up above: delivered again
    other = _locker(server.ctx.db)
    try:
        answered = asyncio.create_task(phone.report(ios, "Acknowledged", guid))
        await asyncio.sleep(0.3)
        assert not answered.done()
        statements.clear()
    finally:
        other.rollback()
        other.close()
    assert offered(await answered) is None
    # The transactional path wrote the answer without reading the command (its copy was kept).
    assert not [s for s in statements if "commands.guid = " in s]
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed" and command.attempts == 2
    assert journal == ["processing", "delivered", "completed"]
    assert types == ["command_delivered", "command_completed"]
