"""SQLite write transactions of the command round trip without SQLAlchemy's session.

A ``Database.transaction(inline=True)`` of four ``Prepared`` statements still cost as much
around the statements as in them: an ``AsyncSession`` and its transaction object, a pool
checkout and return, the connection asked for through a greenlet hand-off, each statement
through an awaited cursor, the commit through the session's, connection's and pool's layers
(measured with cProfile: about half of a Block round trip's service-layer CPU). The channel's
common steps (deliver a command, record the final answer to one) need none of that: they are a
few statements by key that decide nothing in between.

``transaction`` holds the write queue (``Database.write_turn``, measured and logged as every
write transaction) and runs ``BEGIN IMMEDIATE``, the statements and ``COMMIT`` straight on the
sqlite3 connection of one pool connection kept for this per engine, on the event loop's thread:
nothing yields while the queue is held, and one connection serves every such transaction, one
at a time. When another process holds SQLite's write lock (the push worker), or the task already
holds the write queue, it yields None and has written nothing: the caller takes
``Database.transaction``, which waits for the lock on aiosqlite's thread as before. An exception
in the block, a failed statement included, rolls the transaction back; ``Tx.rollback`` does so
explicitly (a step that turns out not to be plain).

The statements are ``mdm.db.prepared.Prepared`` ones, the SQL SQLAlchemy compiles for them, with
its bind and result processors; the engine's ``before_cursor_execute`` listeners (statement
counters) see each one (with the kept connection, without a cursor).
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mdm.db import sqlite_driver
from mdm.db.prepared import MISSING, Prepared


class Database(Protocol):
    """What this module uses of ``mdm.db.engine.Database`` (which imports this module)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def is_sqlite(self) -> bool: ...

    def holds_turn(self) -> bool: ...

    def write_turn(self, inline: bool = False) -> AbstractAsyncContextManager[Any]: ...


class _Kept:
    """The pool connection kept for these transactions (opened on first use)."""

    __slots__ = ("adapted", "closed", "conn", "raw")

    def __init__(self) -> None:
        self.conn: AsyncConnection | None = None
        self.adapted: sqlite_driver.OneHopConnection | None = None
        self.raw: sqlite3.Connection | None = None
        self.closed = False


_KEPT: weakref.WeakKeyDictionary[Engine, _Kept] = weakref.WeakKeyDictionary()


class Tx:
    """A write transaction on the kept connection: ``execute`` and ``mappings`` run a
    ``Prepared`` statement at once (nothing to await)."""

    __slots__ = ("_sync", "dialect", "raw", "rolled_back")

    def __init__(self, raw: sqlite3.Connection, dialect: Dialect, sync: Any) -> None:
        self.raw = raw
        self.dialect = dialect
        self._sync = sync  # the kept connection's SQLAlchemy Connection (for its listeners)
        self.rolled_back = False

    def execute(self, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
        """The rows the statement returned (as sqlite3 gives them; empty without RETURNING)."""
        form = prepared.form(self.dialect)
        values = form.values(params)
        if values is None:
            missing = [key for key, fixed, _ in form.binds if key not in params and fixed is MISSING]
            raise KeyError(f"missing parameters {missing}")
        sync = self._sync
        if sync.dispatch.before_cursor_execute:
            sync.dispatch.before_cursor_execute(sync, None, form.sql, values, None, False)
        try:
            cursor = self.raw.execute(form.sql, values)
            try:
                return cursor.fetchall() if cursor.description else []
            finally:
                cursor.close()
        except sqlite3.Error as exc:  # as SQLAlchemy reports a driver error
            raise DBAPIError.instance(form.sql, values, exc, sqlite3.Error, dialect=self.dialect) from exc

    def mappings(self, prepared: Prepared, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``execute``, each row a dict with SQLAlchemy's result processors applied."""
        rows = self.execute(prepared, params)
        return prepared.processed(self.dialect, rows) if rows else []

    def rollback(self) -> None:
        """Undo the transaction now (the block then ends without a commit)."""
        if not self.rolled_back:
            self.rolled_back = True
            self.raw.rollback()


def _begin(raw: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE without waiting: False when another connection holds the write lock."""
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if sqlite_driver.is_busy(error):
            return False
        raise
    return True


async def _connection(db: Database) -> _Kept:
    engine = db.engine
    kept = _KEPT.get(engine.sync_engine)
    if kept is None:
        kept = _KEPT[engine.sync_engine] = _Kept()
    if kept.raw is None:
        with sqlite_driver.inline():
            conn = await engine.connect()
            adapted: Any = (await conn.get_raw_connection()).dbapi_connection
        if kept.raw is not None or kept.closed:  # opened meanwhile, or closed: not needed
            await conn.close()
            if kept.raw is None:
                raise RuntimeError("the database is closed")
            return kept
        raw: sqlite3.Connection = adapted._connection._conn
        if raw.in_transaction:
            raw.rollback()
        raw.execute("PRAGMA busy_timeout=0")  # never sleep on the loop's thread
        adapted.busy_inline = True
        kept.conn, kept.adapted, kept.raw = conn, adapted, raw
    return kept


def supported(db: Database) -> bool:
    """Whether ``transaction`` can run on ``db`` (a SQLite file through ``sqlite_driver``)."""
    return db.is_sqlite and isinstance(db.engine.dialect.loaded_dbapi, sqlite_driver.OneHopDBAPI)


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Tx | None]:
    """A write transaction holding the write queue, committed at the end of the block (unless
    rolled back; rolled back on an exception); None, nothing begun, when it cannot start at once
    (see the module's docstring)."""
    if not supported(db) or db.holds_turn():
        yield None
        return
    kept = await _connection(db)
    async with db.write_turn(inline=True):
        raw, adapted = kept.raw, kept.adapted
        if raw is None or adapted is None or kept.conn is None or not _begin(raw):
            yield None
            return
        adapted.in_transaction = True
        tx = Tx(raw, db.engine.dialect, kept.conn.sync_connection)
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
        finally:
            if not tx.rolled_back:
                try:
                    raw.commit()
                except sqlite3.Error:
                    raw.rollback()
                    raise
            adapted.in_transaction = raw.in_transaction


async def close(db: Database) -> None:
    """Give the kept connection back (before ``engine.dispose()``)."""
    kept = _KEPT.pop(db.engine.sync_engine, None)
    if kept is None:
        return
    kept.closed = True
    if kept.conn is not None:
        conn, kept.conn, kept.adapted, kept.raw = kept.conn, None, None, None
        await conn.close()
