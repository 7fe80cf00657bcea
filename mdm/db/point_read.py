"""Read-only point look-ups on the hot paths (a poll's or a sync's binding, state and queue look),
without a pool checkout on SQLite.

On SQLite these statements run on the event loop's thread (``sqlite_driver.inline``) and never
yield, so one connection serves all of them, one after the other. Taking a connection from the
pool for each one was the cost under a burst: when more requests held connections than the pool
keeps idle, the pool opened overflow connections (a new aiosqlite thread and the connect-time
PRAGMAs, each a hand-off waiting for a turn of the busy loop) and closed them again on return:
measured 200 ms in ``engine.connect()`` for cache refills at 1,500 KES syncs/s, the whole p99.

So each SQLite engine gets one reader connection of its own, opened on first use and kept until
``close(engine)`` (``Database.close``). Should a statement ever yield while holding it (another
process holds SQLite's lock and the statement goes to the thread), concurrent look-ups take a pool
connection as before instead of waiting. PostgreSQL: a pool connection per look-up, as before
(its statements always yield; one connection cannot be shared).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine, Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from mdm.db import sqlite_driver


class _Reader:
    __slots__ = ("busy", "conn")

    def __init__(self) -> None:
        self.conn: AsyncConnection | None = None
        self.busy = False


_READERS: weakref.WeakKeyDictionary[Engine, _Reader] = weakref.WeakKeyDictionary()


async def first(engine: AsyncEngine, stmt: Executable, params: Mapping[str, Any]) -> Row[Any] | None:
    """The first row of a read-only statement (outside any transaction), or None."""
    if engine.dialect.name != "sqlite":
        async with engine.connect() as pooled:
            return (await pooled.execute(stmt, params)).first()
    reader = _READERS.get(engine.sync_engine)
    if reader is None:
        reader = _READERS[engine.sync_engine] = _Reader()
    with sqlite_driver.inline():
        if reader.busy:
            async with engine.connect() as pooled:
                return (await pooled.execute(stmt, params)).first()
        reader.busy = True
        try:
            if reader.conn is None:
                reader.conn = await engine.connect()
            conn = reader.conn
            try:
                row = (await conn.execute(stmt, params)).first()
                # Ends SQLAlchemy's autobegun block; SQLite opened no transaction for a SELECT,
                # so the driver skips it (``OneHopConnection.rollback``).
                await conn.rollback()
            except BaseException:
                reader.conn = None
                await _discard(conn)
                raise
            return row
        finally:
            reader.busy = False


async def _discard(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    finally:
        await conn.close()


async def close(engine: AsyncEngine) -> None:
    """Give the engine's reader connection back (before ``engine.dispose()``)."""
    reader = _READERS.pop(engine.sync_engine, None)
    if reader is not None and reader.conn is not None:
        conn, reader.conn = reader.conn, None
        await conn.close()
