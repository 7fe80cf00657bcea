"""The one-hop aiosqlite cursor behaves like the DB-API cursor SQLAlchemy expects."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from mdm.db import sqlite_driver
from mdm.db.engine import Database

meta = MetaData()
items = Table("items", meta, Column("id", Integer, primary_key=True), Column("name", String, unique=True))


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    yield database
    await database.close()


async def test_the_engine_uses_the_one_hop_driver(sqlite_db: Database) -> None:
    async with sqlite_db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection.cursor(), sqlite_driver.OneHopCursor)


async def test_rows_rowcount_lastrowid_and_executemany(sqlite_db: Database) -> None:
    async with sqlite_db.engine.begin() as conn:
        first = await conn.execute(insert(items).values(name="a"))
        assert first.inserted_primary_key == (1,)
        await conn.execute(insert(items), [{"name": "b"}, {"name": "c"}, {"name": "d"}])
        changed = await conn.execute(update(items).where(items.c.id > 2).values(name=items.c.name + "!"))
        assert changed.rowcount == 2
        returned = await conn.execute(
            insert(items).values(name="e").returning(items.c.id, items.c.name)
        )
        assert returned.one() == (5, "e")
    async with sqlite_db.engine.connect() as conn:
        names = (await conn.execute(select(items.c.name).order_by(items.c.id))).scalars().all()
        assert names == ["a", "b", "c!", "d!", "e"]
        assert (await conn.execute(text("SELECT 1 WHERE 0"))).first() is None
        streamed = [row.name async for row in await conn.stream(select(items).order_by(items.c.id))]
        assert streamed == names


async def test_errors_keep_their_types_and_roll_back(sqlite_db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with sqlite_db.transaction() as session:
            await session.execute(insert(items).values(name="x"))
            await session.execute(insert(items).values(name="x"))
    async with sqlite_db.session() as session:
        assert (await session.execute(select(items))).all() == []


async def test_concurrent_transactions_on_one_engine(sqlite_db: Database) -> None:
    async def writer(i: int) -> None:
        async with sqlite_db.transaction() as session:
            await session.execute(insert(items).values(name=f"n{i}"))
            count = len((await session.execute(select(items.c.id))).all())
            assert count >= 1

    await asyncio.gather(*(writer(i) for i in range(40)))
    async with sqlite_db.session() as session:
        assert len((await session.execute(select(items.c.id))).all()) == 40


# The test leaves its terminated connection to the garbage collector on purpose.
@pytest.mark.filterwarnings("ignore:The garbage collector is trying to clean up")
def test_a_connection_terminated_as_its_loop_closes_stops_without_a_thread_error(tmp_path: Path) -> None:
    """SQLAlchemy terminates a connection nobody closed (the garbage collector's clean-up, a
    cancelled close) with aiosqlite's ``stop()``, which binds a future to the event loop current
    then. When that loop closes before the connection's thread gets to the stop (the thread still
    busy with a statement), the thread failed reporting to the closed loop: an exception in a
    thread at shutdown (a failed test run). The stop is now queued with nothing to report to."""
    errors: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    thread: threading.Thread | None = None
    try:
        async def terminate_while_busy() -> None:
            nonlocal thread
            db = Database(f"sqlite+aiosqlite:///{tmp_path / 'term.sqlite3'}")
            conn = await db.engine.connect()
            raw = (await conn.get_raw_connection()).dbapi_connection
            assert isinstance(raw, sqlite_driver.OneHopConnection)
            thread = raw._connection._thread
            # The thread still runs a statement of its own (no one waits for it) ...
            raw._connection._tx.put_nowait((None, lambda: time.sleep(0.3)))
            # ... when SQLAlchemy terminates the connection; then the loop closes.
            raw.terminate()

        asyncio.run(terminate_while_busy())
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive()  # the connection's thread stopped
    finally:
        threading.excepthook = hook
    assert errors == []
