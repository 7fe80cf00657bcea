"""The few hottest statements of the command channel, run on the session's DB-API connection.

A Core statement through ``AsyncSession.execute`` costs 50-60 µs on SQLite and ~150 µs on
PostgreSQL of SQLAlchemy's own work before the driver sees it (a greenlet hand-off, the cache
key of the statement, the execution context, parameter processing, the result set-up); the
driver's part is 5 µs (SQLite, inline) to 50 µs (asyncpg). A round trip runs nine of them.

``Prepared`` compiles its statement once per dialect (the SQL text, the order of the positional
parameters, the bind processors SQLAlchemy would apply) and runs it straight on the adapted
DB-API cursor of the session's connection, inside the session's transaction: on SQLite through
``mdm.db.sqlite_driver``'s cursor (inline on the loop or on aiosqlite's thread, busy fallback,
transaction tracking as for every statement), on PostgreSQL through the asyncpg adapter's
prepared-statement cache (it begins the transaction like any first statement). ``execute``
gives the rows as the driver does (for ids, counts, flags); ``mappings`` applies SQLAlchemy's
result processors of the returned columns. ``echo`` does not log these statements; the
engine's ``before_cursor_execute`` listeners (statement counters of tests and tools) see them
(with no execution context).

``autocommit`` (PostgreSQL) hands out a connection outside any transaction block, one of a few
kept out of the pool for this, on which ``Direct`` runs each ``Prepared`` statement as a
transaction of its own, straight on asyncpg: for work that is one statement per step and checks
in each statement what it relied on (the command round trip, ``mdm.core.delivery_direct``).

Nothing here is a new SQL dialect: the SQL is SQLAlchemy's compilation of a Core statement.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import ClauseElement

from mdm.db.kept import Kept, pool_share

# The adapted drivers whose cursors ``execute`` knows; any other runs through SQLAlchemy.
DIRECT_DRIVERS = frozenset({"aiosqlite", "asyncpg"})


MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Form:
    """A Core statement compiled for the driver: what SQLAlchemy's execution would send."""

    sql: str
    # Per positional parameter: its key in the caller's parameters, the value fixed in the
    # statement (``values(in_flight=True)``, ``limit(1)``) or MISSING, and SQLAlchemy's bind
    # processor (or None).
    binds: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    # The names of the columns it returns, and SQLAlchemy's result processor of each (or None).
    keys: tuple[str, ...]
    results: tuple[Callable[[Any], Any] | None, ...]

    def values(self, params: Mapping[str, Any]) -> list[Any] | None:
        """The positional values, processed (None: one is missing)."""
        out = []
        for key, fixed, process in self.binds:
            value = params.get(key, fixed)
            if value is MISSING:
                return None
            out.append(value if process is None else process(value))
        return out


def compile_form(statement: ClauseElement, dialect: Dialect, columns: Sequence[str] | None = None) -> Form:
    """``statement`` compiled once for ``dialect``; ValueError when only SQLAlchemy's execution
    can run it (expanding, literal or computed parameters, escaped names)."""
    compiled: Any = statement.compile(dialect=dialect, column_keys=columns)
    if compiled.positiontup is None or getattr(compiled, "escaped_bind_names", None):
        raise ValueError("direct execution takes positional, plain parameter names")
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("direct execution takes no expanding or literal parameters")
    by_name = {name: bind for bind, name in compiled.bind_names.items()}
    processors = compiled._bind_processors
    binds = []
    for name in compiled.positiontup:
        bind = by_name.get(name)
        if bind is None or bind.callable is not None or bind.expanding:
            raise ValueError(f"parameter {name!r} needs SQLAlchemy's execution")
        binds.append((bind.key, MISSING if bind.required else bind.value, processors.get(name)))
    entries = compiled._result_columns
    keys = tuple(entry[0] for entry in entries)
    results = tuple(entry[3]._cached_result_processor(dialect, None) for entry in entries)
    return Form(str(compiled), tuple(binds), keys, results)


_CONNECTION_KEY = "mdm_prepared_connection"


async def connection_of(session: AsyncSession) -> AsyncConnection:
    """The session's connection in its current transaction, asked for once per transaction:
    ``AsyncSession.connection`` is a greenlet hand-off each time (~15 µs), and a check-in storm
    pair runs nine statements. The transaction is kept by a weak reference: a strong one in the
    session's ``info`` is a cycle (the transaction holds its session) that left every such
    session, its connection and their event dispatchers (~44 objects) to the cycle collector."""
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_CONNECTION_KEY)
    if transaction is not None and cached is not None and cached[0]() is transaction:
        connection: AsyncConnection = cached[1]
        return connection
    connection = await session.connection()
    current = session.sync_session.get_transaction()
    if current is not None:
        session.info[_CONNECTION_KEY] = (weakref.ref(current), connection)
    return connection


class Prepared:
    """A Core statement compiled once per dialect, run by ``execute`` in the caller's session.

    ``columns``: for an ``insert(table)`` without ``values``, the columns its parameters give
    (the others are left to the database, as SQLAlchemy does for a Core insert)."""

    __slots__ = ("_forms", "columns", "statement")

    def __init__(self, statement: ClauseElement, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._forms: dict[str, Form] = {}

    def form(self, dialect: Dialect) -> Form:
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = compile_form(self.statement, dialect, self.columns)
        return form

    async def mappings(self, session: AsyncSession, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``execute``, each row as a dict by column name with the values SQLAlchemy would give
        (its result processors applied: JSON documents, aware timestamps, booleans)."""
        if session.get_bind().dialect.driver not in DIRECT_DRIVERS:
            statement: Any = self.statement
            return [row._asdict() for row in await session.execute(statement, params)]
        rows = await self.execute(session, params)
        return self.processed(session.get_bind().dialect, rows) if rows else []

    async def execute_in(self, session: AsyncSession, params: Mapping[str, Any]) -> list[Any]:
        """``execute`` on the session's connection as ``connection_of`` gives it (asked for once
        per transaction)."""
        return await self.run(await connection_of(session), params)

    async def execute(self, session: AsyncSession, params: Mapping[str, Any]) -> list[Any]:
        """Run the statement with ``params`` (by name) in the session's transaction; the rows it
        returned, unprocessed (empty for a statement without RETURNING). The connection is
        asked for once per transaction (``connection_of``): ``AsyncSession.connection`` for
        each statement was ~15 % of a SQLite round trip's CPU (a greenlet hand-off and the
        session's bookkeeping, nine times)."""
        return await self.run(await connection_of(session), params)

    def processed(self, dialect: Dialect, rows: list[Any]) -> list[dict[str, Any]]:
        """``rows`` that ``run`` returned, as ``mappings`` gives them."""
        form = self._forms[dialect.name]
        keys, results = form.keys, form.results
        return [
            {
                key: value if process is None else process(value)
                for key, value, process in zip(keys, row, results, strict=True)
            }
            for row in rows
        ]

    async def run(self, connection: AsyncConnection, params: Mapping[str, Any]) -> list[Any]:
        """``execute`` on ``connection`` (in its transaction, or as a transaction of its own on an
        ``autocommit`` connection)."""
        if connection.dialect.driver not in DIRECT_DRIVERS:  # SQLAlchemy's execution, as usual
            executable: Any = self.statement
            return list(await connection.execute(executable, params))
        dbapi_connection: Any = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        form = self.form(connection.dialect)
        values = form.values(params)
        if values is None:
            missing = [key for key, fixed, _ in form.binds if key not in params and fixed is MISSING]
            raise KeyError(f"missing parameters {missing}")
        dialect = connection.dialect
        cursor = dbapi_connection.cursor()
        sync = connection.sync_connection
        if sync is not None and sync.dispatch.before_cursor_execute:
            sync.dispatch.before_cursor_execute(sync, cursor, form.sql, values, None, False)
        try:
            if dialect.name == "postgresql":
                await cursor._prepare_and_execute(form.sql, values)  # the adapter's own path
            else:
                await cursor._execute_async(form.sql, values)  # mdm.db.sqlite_driver.OneHopCursor
        except dialect.loaded_dbapi.Error as exc:
            # As SQLAlchemy reports a driver error (IntegrityError, OperationalError...); a lost
            # connection is invalidated so that the pool does not hand it out again.
            lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                await connection.invalidate(exc)
            base = dialect.loaded_dbapi.Error
            raise DBAPIError.instance(
                form.sql, values, exc, base, connection_invalidated=lost, dialect=dialect
            ) from exc
        rows = list(cursor._rows)
        cursor.close()
        return rows


def autocommits(engine: AsyncEngine) -> bool:
    """Whether ``autocommit`` runs ``Prepared`` statements straight on the driver (asyncpg)."""
    return engine.dialect.driver == "asyncpg"


# One pool connection in this many is kept out of the pool for ``autocommit`` (4 of the default
# 20), beside ``mdm.db.point_read``'s kept readers (10 of 20).
KEPT_SHARE = 5
# Uses that may wait per kept connection when all are busy (``mdm.db.kept.Kept``).
WAITERS_PER_KEPT = 4
# Statements prepared per kept connection (by SQL text); module constants, so few.
MAX_KEPT_STATEMENTS = 256


class Direct:
    """A PostgreSQL connection outside any transaction block (``autocommit``): each ``Prepared``
    statement commits by itself, with no BEGIN or COMMIT round trip around it.

    On a kept connection (``mdm.db.kept``) the statement runs straight on asyncpg's prepared
    statement (prepared once per connection): the SQLAlchemy adapter's cursor around it (its
    execution mutex, statement cache look-up, description and status parsing) cost as much as
    asyncpg's own part. Errors are reported as SQLAlchemy reports them (``DBAPIError``), and a statement
    that failed or was interrupted marks the connection ``broken``: it is closed, not kept."""

    __slots__ = ("broken", "connection", "in_block", "raw", "statements")

    def __init__(self, connection: AsyncConnection, raw: Any = None) -> None:
        self.connection = connection
        self.raw = raw  # the asyncpg Connection of a kept connection, else None
        self.statements: dict[str, Any] = {}  # SQL -> asyncpg PreparedStatement (kept only)
        self.broken = False
        self.in_block = False  # inside ``block`` (still, after it failed)

    async def execute(self, prepared: Prepared, params: Mapping[str, Any]) -> list[Any]:
        if self.raw is None:
            try:
                return await prepared.run(self.connection, params)
            except BaseException:
                self.broken = True
                raise
        dialect = self.connection.dialect
        form = prepared.form(dialect)
        values = form.values(params)
        if values is None:
            missing = [key for key, fixed, _ in form.binds if key not in params and fixed is MISSING]
            raise KeyError(f"missing parameters {missing}")
        sync = self.connection.sync_connection
        if sync is not None and sync.dispatch.before_cursor_execute:  # statement counters
            sync.dispatch.before_cursor_execute(sync, None, form.sql, values, None, False)
        try:
            try:
                return list(await (await self._statement(form.sql)).fetch(*values))
            except Exception as exc:
                if type(exc).__name__ != "InvalidCachedStatementError":
                    raise
                # The schema changed under the prepared statement (a migration): prepare again once.
                self.statements.pop(form.sql, None)
                return list(await (await self._statement(form.sql)).fetch(*values))
        except BaseException as exc:
            self.broken = True
            if not isinstance(exc, Exception):
                raise  # cancelled mid-statement: the connection's state is unknown, it is closed
            raise self._reported(exc, form.sql, values) from exc

    async def _statement(self, sql: str) -> Any:
        statement = self.statements.get(sql)
        if statement is None:
            if len(self.statements) >= MAX_KEPT_STATEMENTS:
                self.statements.clear()
            statement = self.statements[sql] = await self.raw.prepare(sql)
        return statement

    def _reported(self, exc: Exception, sql: str, values: list[Any]) -> Exception:
        """``exc`` (asyncpg's) as SQLAlchemy's execution reports it."""
        dialect = self.connection.dialect
        base = dialect.loaded_dbapi.Error
        adapted: Any = self.connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        try:
            adapted._handle_exception(exc)  # raises the DB-API error the adapter maps it to
        except base as translated:
            lost = dialect.is_disconnect(translated, adapted, None)
            return DBAPIError.instance(
                sql, values, translated, base, connection_invalidated=lost, dialect=dialect
            )
        except Exception as other:
            return other
        return exc

    async def mappings(self, prepared: Prepared, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows = await self.execute(prepared, params)
        return prepared.processed(self.connection.dialect, rows) if rows else []

    @asynccontextmanager
    async def block(self, settings: str = "") -> AsyncIterator[None]:
        """The statements run inside as ONE transaction block, committed at the end: for work of
        a few statements that must hold row locks between them (the push dispatcher's take and
        its deferral). ``settings``: constant SQL (``SET LOCAL ...``) sent with the BEGIN in the
        same round trip, so it holds for this block alone. A block that failed or was interrupted
        marks the connection ``broken``: it is closed with its transaction, never reused."""
        raw = self.raw
        if raw is None:  # a pool connection lent instead of a kept one
            adapted: Any = self.connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
            raw = adapted._connection
        self.in_block = True
        try:
            await raw.execute(f"BEGIN; {settings}" if settings else "BEGIN")
            yield
            await raw.execute("COMMIT")
        except BaseException:
            self.broken = True
            raise
        self.in_block = False


_KEPT: weakref.WeakKeyDictionary[Any, Kept[Direct]] = weakref.WeakKeyDictionary()


def _kept(engine: AsyncEngine) -> Kept[Direct]:
    kept = _KEPT.get(engine.sync_engine)
    if kept is None:
        kept = _KEPT[engine.sync_engine] = Kept(pool_share(engine, KEPT_SHARE), WAITERS_PER_KEPT, Direct)
    return kept


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[Direct]:
    """A connection of ``engine`` (``autocommits``) on which every statement is a transaction of
    its own, for work that is one statement per step and checks in each statement what it relies
    on (the command round trip on PostgreSQL: ``mdm.core.delivery_direct``). A transaction block
    costs two round trips more (BEGIN, COMMIT), each a turn of the event loop: ~0.1 ms of the
    process's CPU apiece, measured here.

    The connection is one kept out of the pool for this (``mdm.db.kept``): a pool checkout and
    return (a greenlet hand-off each, the pool's bookkeeping, the switch to autocommit and back)
    cost ~15 % of a PostgreSQL round trip, which took two. When every kept connection is busy, the use
    waits for the next one given back (or, with many waiting, takes a pool connection). Nothing
    of a transaction can be left on a kept connection: no statement runs in a block, and one that
    failed or was interrupted closes it."""
    if not autocommits(engine):
        raise ValueError(f"no autocommit statements on {engine.dialect.driver}")
    kept = _kept(engine)
    direct = await kept.take(engine)
    if direct is not None:
        try:
            yield direct
        finally:
            await kept.give_back(direct)
        return
    async with engine.connect() as connection:
        # The asyncpg adapter's DB-API switch (what isolation_level="AUTOCOMMIT" sets): no
        # BEGIN before a statement; back to the pool's setting before the connection returns.
        adapted: Any = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        adapted.autocommit = True
        direct = Direct(connection)
        try:
            yield direct
        finally:
            if direct.in_block:  # a failed ``block``: its transaction may still be open
                await connection.invalidate()
            else:
                adapted.autocommit = False


async def close(engine: AsyncEngine) -> None:
    """Give the engine's kept connections back (before ``engine.dispose()``); those in use are
    closed when they are given back."""
    kept = _KEPT.pop(engine.sync_engine, None)
    if kept is not None:
        await kept.close()
