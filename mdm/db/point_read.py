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
connection as before instead of waiting.

PostgreSQL: a pool connection per look-up (its statements always yield; one connection cannot be
shared), in autocommit mode (``mdm.db.prepared.autocommit``) with the statement prepared once per
connection by asyncpg: one round trip. Through SQLAlchemy's execution the look-up was three
(BEGIN when the statement started the transaction block, the statement, ROLLBACK when the
connection went back to the pool), each a turn of the event loop: with the command probe of
``mdm.ios.channel_direct`` they were most of a cold poll's 1.7 ms of CPU.

On that SQLite reader, a statement whose compiled form is plain (positional parameters, none
expanded at execution) runs straight on the sqlite3 connection (``sqlite_driver.inline_first``)
from a plan made once per statement: SQL text, parameter order, bind and result processors. The
row is a named tuple (index, attribute and ``_asdict()`` access, like SQLAlchemy's ``Row``).
SQLAlchemy's execution around a statement (compiled-cache look-up, execution context, result
object, the autobegun block's rollback) cost ~60-100 µs against ~10 µs for SQLite itself: two such
look-ups were a quarter of a cold iOS poll's CPU.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy.engine import Dialect, Engine, Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable

from mdm.db import prepared, sqlite_driver
from mdm.db.kept import Kept, pool_share
from mdm.db.prepared import Form, compile_form

MAX_PLANS = 256  # statements are module constants; ad-hoc ones (tests) must not grow this forever
# PostgreSQL: one pool connection in this many is kept for point look-ups (10 of the default 20:
# with 4, a burst of 16 concurrent cold polls ran half its look-ups the pooled way, 80-130 µs each
# against 45-75 µs).
PG_READER_SHARE = 2
# PostgreSQL: look-ups that may wait per kept reader when all are busy (``mdm.db.kept``).
WAITERS_PER_READER = 4


class _Plan:
    """A statement compiled once (``mdm.db.prepared.compile_form``) for the reader's direct path."""

    __slots__ = ("form", "results", "row", "stmt")

    def __init__(self, stmt: Executable, form: Form) -> None:
        self.stmt = stmt  # held: the plans are keyed by its id
        self.form = form
        # None: no column needs processing
        self.results = None if all(p is None for p in form.results) else form.results
        self.row: type[tuple[Any, ...]] | None = None  # made from the first cursor description

    def make_row(self, description: Any, data: tuple[Any, ...]) -> Row[Any]:
        """``description``: the cursor's (names first), or None for the compiled column keys."""
        if self.row is None:
            names = [d[0] for d in description] if description is not None else list(self.form.keys)
            self.row = namedtuple("PointRow", names, rename=True)  # type: ignore[misc]
        if self.results is not None:
            data = tuple(v if p is None else p(v) for v, p in zip(data, self.results, strict=True))
        return cast("Row[Any]", self.row._make(data))  # type: ignore[attr-defined]


def _plan(stmt: Executable, dialect: Dialect) -> _Plan | None:
    """The direct plan of ``stmt``, or None when it needs SQLAlchemy's execution (expanding or
    post-compile parameters, callables, a statement returning no columns that is not text)."""
    if not isinstance(stmt, ClauseElement):
        return None
    try:
        form = compile_form(stmt, dialect)
    except ValueError:
        return None
    if not form.keys and not getattr(stmt, "_is_text_clause", False):
        return None
    return _Plan(stmt, form)


class _Reader:
    __slots__ = ("busy", "closed", "conn", "plans", "raw")

    def __init__(self) -> None:
        self.conn: AsyncConnection | None = None
        self.raw: Any = None  # conn's DB-API connection (sqlite_driver.OneHopConnection)
        self.busy = False
        self.closed = False  # ``close`` ran while busy: the look-up holding it closes it
        # id(statement) -> its plan (None: SQLAlchemy executes it)
        self.plans: dict[int, _Plan | None] = {}

    def plan(self, stmt: Executable, dialect: Dialect) -> _Plan | None:
        key = id(stmt)
        if key in self.plans:
            plan = self.plans[key]
            if plan is None or plan.stmt is stmt:
                return plan
        if len(self.plans) >= MAX_PLANS:
            self.plans.clear()
        plan = self.plans[key] = _plan(stmt, dialect)
        return plan


_READERS: weakref.WeakKeyDictionary[Engine, _Reader] = weakref.WeakKeyDictionary()
# PostgreSQL (asyncpg): id(statement) -> (its plan, the ``Prepared`` that runs it); None: SQLAlchemy
# executes it. Per engine, like the readers (a plan is compiled for the engine's dialect).
_DIRECT: weakref.WeakKeyDictionary[Engine, dict[int, tuple[_Plan, prepared.Prepared] | None]] = (
    weakref.WeakKeyDictionary()
)


def _direct_plan(engine: AsyncEngine, stmt: Executable) -> tuple[_Plan, prepared.Prepared] | None:
    plans = _DIRECT.get(engine.sync_engine)
    if plans is None:
        plans = _DIRECT[engine.sync_engine] = {}
    key = id(stmt)
    if key in plans:
        entry = plans[key]
        if entry is None or entry[0].stmt is stmt:
            return entry
    if len(plans) >= MAX_PLANS:
        plans.clear()
    plan = _plan(stmt, engine.dialect)
    entry = plans[key] = None if plan is None else (plan, prepared.Prepared(cast(ClauseElement, stmt)))
    return entry


class _PgReader:
    """A pool connection kept out of the pool in autocommit mode, with the asyncpg statements
    prepared on it (by SQL text)."""

    __slots__ = ("broken", "connection", "raw", "statements")

    def __init__(self, connection: AsyncConnection, raw: Any) -> None:
        self.connection = connection
        self.raw = raw  # the asyncpg Connection
        self.statements: dict[str, Any] = {}
        self.broken = False  # (a failed look-up discards its reader at once)

    async def _prepared(self, sql: str, values: list[Any]) -> Any:
        """The asyncpg statement of ``sql`` prepared on this connection (kept by SQL text), the
        engine's statement counters told of the look-up about to run."""
        statement = self.statements.get(sql)
        if statement is None:
            if len(self.statements) >= MAX_PLANS:
                self.statements.clear()
            statement = self.statements[sql] = await self.raw.prepare(sql)
        sync = self.connection.sync_connection
        if sync is not None and sync.dispatch.before_cursor_execute:  # statement counters
            sync.dispatch.before_cursor_execute(sync, None, sql, values, None, False)
        return statement

    async def fetchrow(self, sql: str, values: list[Any]) -> Any:
        return await (await self._prepared(sql, values)).fetchrow(*values)

    async def fetch(self, sql: str, values: list[Any]) -> list[Any]:
        return list(await (await self._prepared(sql, values)).fetch(*values))


_PG_READERS: weakref.WeakKeyDictionary[Engine, Kept[_PgReader]] = weakref.WeakKeyDictionary()


def _pg_readers(engine: AsyncEngine) -> Kept[_PgReader]:
    """The engine's kept readers (``mdm.db.kept``): when all are busy, a look-up waits for the
    next one given back instead of taking a pool connection: a reader is busy for one round trip,
    and a pooled look-up cost 80-130 µs of CPU against 45-75 µs on a kept reader."""
    readers = _PG_READERS.get(engine.sync_engine)
    if readers is None:
        limit = pool_share(engine, PG_READER_SHARE)
        readers = _PG_READERS[engine.sync_engine] = Kept(limit, WAITERS_PER_READER, _PgReader)
    return readers


async def _pg_first(engine: AsyncEngine, plan: _Plan, values: list[Any]) -> tuple[bool, Row[Any] | None]:
    """(True, the row) when a kept reader ran the statement; (False, None) when none is free or
    it failed (the caller then runs it on a pool connection, which reports the error as usual)."""
    readers = _pg_readers(engine)
    reader = await readers.take(engine)
    if reader is None:
        return False, None
    try:
        record = await reader.fetchrow(plan.form.sql, values)
    except Exception:
        await readers.discard(reader, invalidate=True)  # (a lost connection, a changed schema...)
        return False, None
    except BaseException:
        # Cancelled mid-statement: the connection's state is unknown.
        await readers.discard(reader, invalidate=True)
        raise
    await readers.give_back(reader)
    if record is None:
        return True, None
    names = None if plan.form.keys else [(k,) for k in record.keys()]
    return True, plan.make_row(names, tuple(record))


async def _pg_rows(engine: AsyncEngine, plan: _Plan, values: list[Any]) -> list[Row[Any]] | None:
    """``_pg_first`` for every row: None when no kept reader ran it."""
    readers = _pg_readers(engine)
    reader = await readers.take(engine)
    if reader is None:
        return None
    try:
        records = await reader.fetch(plan.form.sql, values)
    except Exception:
        await readers.discard(reader, invalidate=True)
        return None
    except BaseException:
        await readers.discard(reader, invalidate=True)
        raise
    await readers.give_back(reader)
    return [plan.make_row(None if plan.form.keys else [(k,) for k in r.keys()], tuple(r)) for r in records]


async def rows(engine: AsyncEngine, stmt: Executable, params: Mapping[str, Any]) -> list[Row[Any]]:
    """Every row of a read-only statement (outside any transaction). On PostgreSQL on a kept
    reader, as ``first``; otherwise (SQLite, or no reader ran it) on a pool connection."""
    if engine.dialect.name != "sqlite" and prepared.autocommits(engine):
        entry = _direct_plan(engine, stmt)
        if entry is not None:
            values = entry[0].form.values(params)
            if values is not None:
                done = await _pg_rows(engine, entry[0], values)
                if done is not None:
                    return done
    async with engine.connect() as pooled:
        return list((await pooled.execute(stmt, params)).all())


async def first(engine: AsyncEngine, stmt: Executable, params: Mapping[str, Any]) -> Row[Any] | None:
    """The first row of a read-only statement (outside any transaction), or None."""
    if engine.dialect.name != "sqlite":
        entry = _direct_plan(engine, stmt) if prepared.autocommits(engine) else None
        if entry is not None:
            pg_plan, statement = entry
            values = pg_plan.form.values(params)
            if values is not None:
                ran, row = await _pg_first(engine, pg_plan, values)
                if ran:
                    return row
                async with prepared.autocommit(engine) as direct:
                    rows = await direct.execute(statement, params)
                if not rows:
                    return None
                record = rows[0]  # an asyncpg Record: names (a text statement's too) and values
                names = None if pg_plan.form.keys else [(k,) for k in record.keys()]
                return pg_plan.make_row(names, tuple(record))
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
                reader.raw = (await reader.conn.get_raw_connection()).dbapi_connection
            conn = reader.conn
            try:
                plan = reader.plan(stmt, engine.dialect)
                if plan is not None:
                    values = plan.form.values(params)
                    raw = reader.raw
                    done = None if values is None else sqlite_driver.inline_first(raw, plan.form.sql, values)
                    if done is not None:
                        description, data = done
                        return None if data is None else plan.make_row(description, data)
                row = (await conn.execute(stmt, params)).first()
                # Ends SQLAlchemy's autobegun block; SQLite opened no transaction for a SELECT,
                # so the driver skips it (``OneHopConnection.rollback``).
                await conn.rollback()
            except BaseException:
                reader.conn = reader.raw = None
                await _discard(conn)
                raise
            return row
        finally:
            reader.busy = False
            if reader.closed and reader.conn is not None:
                conn, reader.conn, reader.raw = reader.conn, None, None
                await conn.close()


async def _discard(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    finally:
        await conn.close()


async def close(engine: AsyncEngine) -> None:
    """Give the engine's reader connections back (before ``engine.dispose()``), and drop its
    plans now: each holds a named tuple class, cyclic garbage, that a later collection would
    otherwise find whenever the engine is freed."""
    _DIRECT.pop(engine.sync_engine, None)
    pg = _PG_READERS.pop(engine.sync_engine, None)
    if pg is not None:
        await pg.close()
    reader = _READERS.pop(engine.sync_engine, None)
    if reader is None:
        return
    # A look-up holding the reader (opening its connection, or a statement gone to the driver's
    # thread) closes it when done: closing it here was under that statement, or too early to
    # see the connection being opened, which then stayed open with no one to close it.
    reader.closed = True
    if not reader.busy and reader.conn is not None:
        conn, reader.conn, reader.raw = reader.conn, None, None
        await conn.close()
