"""aiosqlite with one thread hop per statement, for the embedded SQLite engine.

aiosqlite runs the sqlite3 connection in its own thread; every call into it is a hand-off through
a queue and a wake-up of the event loop. SQLAlchemy's aiosqlite adapter makes four such calls per
statement (create the cursor, execute, fetchall, close), and the hand-offs, not SQLite, were most
of the CPU of a command round trip (about 60 per round trip). This cursor does the four in one
call on the connection's thread. It is hand-written because neither SQLAlchemy nor aiosqlite
offers it; it plugs in through ``create_async_engine(module=...)`` and keeps SQLAlchemy's dialect,
pool and statement cache as they are. Server-side cursors (``stream()``) are unchanged.

Each statement also reports whether the connection is now inside a transaction
(``sqlite3.Connection.in_transaction``, read on its thread). ``commit`` and ``rollback`` with no
transaction open are then no-ops in SQLite and cost no hop: the pool's rollback when a connection
returns after a commit, and the end of a read-only look (a SELECT opens no transaction in
sqlite3's default mode), were a third of the hops of a command round trip.

``INLINE`` (set by ``Database.transaction(inline=True)``): the statements, the commit and the
rollback of the current task run on the event loop's thread instead, with no hop at all. For the
short transactions of the command channel (point look-ups and writes by key) that is cheaper
than the hand-offs, and, above all, the transaction no longer yields to the event loop while it
holds SQLite's write queue: under load, every yield waited for a turn of a busy loop, and every
other writer waited behind it (a lock convoy: seconds of p99 at 16 flows). The connection is
opened with ``check_same_thread=False`` (SQLAlchemy's default for file databases) and is used by
one statement at a time (the adapter's mutex), so which thread runs it does not matter.

``OneHopConnection.begin_immediate`` (set by ``Database.transaction`` for every queued SQLite
write transaction): the transaction's first statement is preceded by ``BEGIN IMMEDIATE`` in the
same call, so that its reads and writes are one SQLite transaction holding the write lock from
the start (sqlite3 would open one only at the first write: reads before it were transactions of
their own, and another process, the push worker, could commit in between). No statement or hop
of its own; the wait for another process's lock is timed (``lock_wait``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

# description, rows, rowcount, lastrowid, in a transaction now, seconds waited for the write lock
Outcome = tuple[Any, list[Any], int, int | None, bool, float]
# Run this task's statements on the event loop's thread (see the module's docstring).
INLINE: ContextVar[bool] = ContextVar("mdm_sqlite_inline", default=False)
# Seconds between two tries of an inline BEGIN IMMEDIATE that found another process's write lock
# (the push worker process sets it: ``mdm.db.writer_turns``). None: wait in SQLite's busy handler
# on aiosqlite's thread, whose sleeps grow to 100 ms: the lock was often free for tens of
# milliseconds before the sleeper looked again, while the server's bulk batches gave way to it.
LOCK_POLL: ContextVar[float | None] = ContextVar("mdm_sqlite_lock_poll", default=None)


@contextlib.contextmanager
def inline() -> Iterator[None]:
    """The SQLite statements of this block run on the event loop's thread (see ``INLINE``): for
    a read-only point look-up outside a transaction, where a hand-off to aiosqlite's thread costs
    more than the statement. No effect on PostgreSQL."""
    token = INLINE.set(True)
    try:
        yield
    finally:
        INLINE.reset(token)


BUSY_TIMEOUT_MS = 10_000  # how long a statement waits for another connection's write lock


def is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(error)


def _run(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool, busy_ms: int | None = None,
    begin: bool = False,
) -> Outcome:
    """On aiosqlite's thread (or inline): the whole statement, results included (``busy_ms``: set
    the busy timeout first; ``begin``: open the transaction with ``BEGIN IMMEDIATE`` first unless
    one is open, timed: the wait for another connection's write lock)."""
    if busy_ms is not None:
        connection.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    waited = 0.0
    if begin and not connection.in_transaction:
        started = time.perf_counter()
        try:
            connection.execute("BEGIN IMMEDIATE")
        finally:
            waited = time.perf_counter() - started
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid, connection.in_transaction, waited
    finally:
        cursor.close()


async def _poll_begin(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool, poll: float
) -> Outcome:
    """``LOCK_POLL``: try the inline BEGIN IMMEDIATE and its statement again every ``poll``
    seconds, for at most the busy timeout (then refused, as SQLite would). The outcome's lock
    wait is the time spent here."""
    started = time.perf_counter()
    deadline = started + BUSY_TIMEOUT_MS / 1000
    while True:
        await asyncio.sleep(poll)
        try:
            outcome = _run(connection, operation, parameters, many, None, True)
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.perf_counter() >= deadline:
                raise
            continue
        return (*outcome[:5], time.perf_counter() - started)


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount", "arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No sqlite3 cursor is created here (that would be a hop of its own): _run makes one per
        # statement on the connection's thread.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self.arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    async def _async_soft_close(self) -> None:
        return None  # the sqlite3 cursor is already closed; rows and description stay

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    def nextset(self) -> None:
        return None

    async def _outcome(self, operation: Any, parameters: Any, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        adapted: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        adapted.in_transaction = True  # unknown until the statement reports (e.g. if it fails)
        begin = adapted.begin_immediate
        async with adapted._execute_mutex:
            outcome: Outcome | None = None
            if INLINE.get():
                # Never sleep in SQLite's busy handler on the loop's thread: another connection
                # (another process) holding the write lock sends the statement to the thread.
                if not adapted.busy_inline:
                    connection._conn.execute("PRAGMA busy_timeout=0")
                    adapted.busy_inline = True
                try:
                    outcome = _run(connection._conn, operation, parameters, many, None, begin)
                except sqlite3.OperationalError as error:
                    if not is_busy(error):
                        raise
                poll = LOCK_POLL.get()
                if outcome is None and begin and poll is not None:
                    started = time.perf_counter()
                    try:
                        outcome = await _poll_begin(connection._conn, operation, parameters, many, poll)
                    except sqlite3.OperationalError as error:
                        if is_busy(error):  # refused: the lock stayed taken for the whole timeout
                            adapted.lock_wait += time.perf_counter() - started
                        raise
            if outcome is None:
                busy_ms = BUSY_TIMEOUT_MS if adapted.busy_inline else None
                adapted.busy_inline = False
                started = time.perf_counter()
                try:
                    outcome = await connection._execute(  # type: ignore[no-untyped-call, unused-ignore]  # private API
                        _run, connection._conn, operation, parameters, many, busy_ms, begin
                    )
                except sqlite3.OperationalError as error:
                    if begin and is_busy(error):  # refused: the lock stayed taken for the whole timeout
                        adapted.lock_wait += time.perf_counter() - started
                    raise
        self._description, rows, self._rowcount, self._lastrowid, adapted.in_transaction, waited = outcome
        if operation.startswith("PRAGMA busy_timeout"):
            # A timeout of its own (the connect event's, when the connection is first opened
            # inside an inline transaction): the next inline statement sets 0 again. Left marked,
            # inline statements slept in SQLite's busy handler on the loop's thread, up to 10 s.
            adapted.busy_inline = False
        if begin:
            adapted.begin_immediate = False
            adapted.lock_wait += waited
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._outcome(operation, parameters, False)
        return self

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._outcome(operation, seq_of_parameters, True)
        return self


def inline_first(
    adapted: OneHopConnection, operation: str, parameters: Sequence[Any]
) -> tuple[Any, Any] | None:
    """A read-only statement outside any transaction, run here on the event loop's thread with no
    SQLAlchemy execution around it: (cursor description, first row or None). None when another
    connection holds SQLite's lock (the caller takes the thread instead: never sleep here)."""
    raw: sqlite3.Connection = adapted._connection._conn
    if not adapted.busy_inline:
        raw.execute("PRAGMA busy_timeout=0")
        adapted.busy_inline = True
    try:
        cursor = raw.execute(operation, parameters)
    except sqlite3.OperationalError as error:
        if not is_busy(error):
            raise
        return None
    try:
        return cursor.description, cursor.fetchone()
    finally:
        cursor.close()
        if raw.in_transaction:  # a SELECT opens none; should one be open, end it
            raw.rollback()
        adapted.in_transaction = False


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("begin_immediate", "busy_inline", "in_transaction", "lock_wait")
    _cursor_cls = OneHopCursor  # type: ignore[assignment]  # a subclass; the stub types it exactly

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # Whether SQLite may hold a transaction open on this connection (True when unsure).
        self.in_transaction = True
        # Whether the busy timeout is 0 for inline statements (restored before a hop).
        self.busy_inline = False
        # Begin the next transaction with BEGIN IMMEDIATE, in the hop of its first statement
        # (set by ``Database.transaction``; cleared once a statement ran, and at commit/rollback).
        self.begin_immediate = False
        # Seconds the statements waited for another connection's write lock (BEGIN IMMEDIATE);
        # read and reset by ``Database.transaction``.
        self.lock_wait = 0.0

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            self.in_transaction = True  # its statements do not report
        return super().cursor(server_side)

    def rollback(self) -> None:
        self.begin_immediate = False
        if self.in_transaction:
            if INLINE.get():
                self._inline(self._connection._conn.rollback)
            else:
                super().rollback()
            self.in_transaction = False

    def commit(self) -> None:
        self.begin_immediate = False
        if self.in_transaction:
            if INLINE.get():
                self._inline(self._connection._conn.commit)
            else:
                super().commit()
            self.in_transaction = False

    def _inline(self, call: Any) -> None:
        try:
            call()
        except Exception as error:
            self._handle_exception(error)

    def _terminate_force_close(self) -> None:
        # SQLAlchemy terminates a connection nobody closed (the garbage collector's clean-up, a
        # cancelled close) with aiosqlite's stop(), which binds a future to the event loop
        # current at the call; the connection's thread reports to that loop once it gets to the
        # stop. When the loop has closed by then (a shutdown, a test's loop), the thread dies
        # with "Event loop is closed". Called from a thread that has no event loop, stop()
        # binds no future (its own fallback), and nothing waits for this one anyway.
        stopper = threading.Thread(target=self._connection.stop, name="aiosqlite-stop")
        stopper.start()
        stopper.join()


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)


def dbapi() -> OneHopDBAPI:
    """The DB-API module to hand to ``create_async_engine(module=...)`` for sqlite+aiosqlite."""
    return OneHopDBAPI(aiosqlite, sqlite3)
