"""Engine and session factory for SQLite (embedded default) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mdm.db import audit_context, point_read, prepared, sqlite_direct, sqlite_driver
from mdm.db import metrics as db_metrics
from mdm.db.write_queue import WriteQueue

log = logging.getLogger(__name__)
SLOW_LOG_INTERVAL = 10.0  # seconds between two "slow write transaction" lines
# A write transaction that waited this long for another process's SQLite write lock is logged:
# a tenth of the busy timeout, well before one is refused.
LOCK_WAIT_WARN_SECONDS = sqlite_driver.BUSY_TIMEOUT_MS / 10_000
# SQLite's own checkpoint, run by the connection whose commit crosses this many WAL pages (its
# default is 1,000): a safety net only. A commit on the event loop's thread (``inline``) would
# otherwise copy the WAL into the database right there (~17 ms per 1,000 pages, measured here);
# the server checkpoints from a thread instead (``Database.start_checkpointer``).
AUTOCHECKPOINT_PAGES = 10_000
# How long a checkpoint pass waits for the WAL's readers before it lets the next writer start the
# WAL over (``_checkpoint``).
RESTART_WAIT_MS = 10


class DatabaseUnavailable(Exception):
    """The database cannot be reached or opened; the message says which and why."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={sqlite_driver.BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    cursor.close()


def _checkpoint(
    connection: sqlite3.Connection | None, path: str
) -> tuple[sqlite3.Connection, tuple[int, int]]:
    """On a worker thread: copy what the WAL holds into the database without waiting for anyone
    (PASSIVE: frames a reader still needs stay for the next pass); returns the connection (opened
    on the first pass, ``mode=rw``: never creates a database) and (frames in the WAL, frames
    copied)."""
    if connection is None:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, check_same_thread=False, timeout=0)
    _busy, log, done = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return connection, (int(log), int(done))


def _restart(connection: sqlite3.Connection) -> None:
    """On a worker thread, with the process's write queue held (``Database._checkpoint_loop``):
    copy the frames written since the pass, then make sure the next writer starts the WAL over.
    A writer does so only if no reader still reads from the WAL when it begins; under load one
    nearly always did, so the WAL grew past AUTOCHECKPOINT_PAGES and a commit on the event loop
    ran SQLite's own checkpoint there (20-50 ms of the loop, twice a second at 400 round trips/s).
    RESTART waits up to RESTART_WAIT_MS for the readers; it holds SQLite's write lock meanwhile,
    which the process's writers, waiting for the queue, do not ask for."""
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    connection.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
    try:
        connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    finally:
        connection.execute("PRAGMA busy_timeout=0")


async def _one_hop(session: AsyncSession, immediate: bool) -> sqlite_driver.OneHopConnection | None:
    """The session's connection (None when the engine does not use ``mdm.db.sqlite_driver``),
    asked to begin its transaction with BEGIN IMMEDIATE when ``immediate``."""
    # (Through ``connection_of``: the transaction's ``Prepared`` statements find it there.)
    raw = await (await prepared.connection_of(session)).get_raw_connection()
    adapted = raw.dbapi_connection
    if not isinstance(adapted, sqlite_driver.OneHopConnection):
        return None
    adapted.begin_immediate = immediate
    adapted.lock_wait = 0.0
    return adapted


async def _close(session: AsyncSession, adapted: sqlite_driver.OneHopConnection | None) -> None:
    """Close a write transaction's session before the write queue is released. ``async with
    session`` closes in a task of its own and waits for it through ``asyncio.shield`` (so that a
    cancellation cannot abandon the close): three turns of the event loop, with the queue held, on
    a saturated loop tens of milliseconds each, for every transaction, inline ones included. With
    nothing left to roll back (the transaction committed or rolled back), closing only returns the
    connection to the pool, where ``sqlite_driver`` skips the reset's rollback: it awaits nothing
    and cannot be cancelled halfway; anything else is closed the shielded way."""
    if adapted is not None and not adapted.in_transaction:
        await session.close()
    else:
        await session.__aexit__(None, None, None)


def _locked(exc: OperationalError) -> bool:
    orig = exc.orig
    return isinstance(orig, sqlite3.OperationalError) and sqlite_driver.is_busy(orig)


def _callers() -> str:
    """The running coroutines' frames outside this module (the awaiting callers are linked
    while they run), innermost first."""
    names: list[str] = []
    frame = sys._getframe(1)
    while frame is not None and len(names) < 6:
        code = frame.f_code
        if "/mdm/" in code.co_filename and not code.co_filename.endswith("/db/engine.py"):
            names.append(code.co_qualname)
        frame = frame.f_back  # type: ignore[assignment]
    return " < ".join(names)


def _safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


class WriteTurn:
    """A hold of the write queue (``Database.write_turn``)."""

    __slots__ = ("lock_wait",)

    def __init__(self) -> None:
        self.lock_wait = 0.0  # seconds waited for another process's write lock while held


class Database:
    """Owns the engine; hands out sessions and transactions."""

    def __init__(self, url: str, pool_size: int = 10, echo: bool = False, *, immediate: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # SQLite: begin every write transaction with BEGIN IMMEDIATE (the file's write lock taken
        # at once, in the hop of its first statement: ``sqlite_driver.OneHopConnection``). The
        # server and the push worker process are two writers; pysqlite opens a transaction only at
        # its first write, so a transaction's reads and its writes were atomic only against this
        # process's own write queue: another process could commit in between (a wake-up requested
        # between the take's read and its delete was lost). ``immediate=False``: the old deferred
        # begin, for tests that show what it allowed.
        self.immediate = immediate and self.is_sqlite
        kwargs: dict[str, Any] = {"echo": echo}
        # Up to 2 x [database] pool_size connections, each kept open once opened. An overflow
        # connection (SQLAlchemy's default beyond pool_size) is closed on its return and opened
        # again by the next burst: a PostgreSQL connect and authentication, or an aiosqlite
        # thread and its PRAGMAs, inside the requests that wait for it; under steady load that
        # churn fed on itself (measured: p99 0.6 s at 1,500 KES syncs/s on PostgreSQL).
        pooled = {"pool_size": 2 * pool_size, "max_overflow": 0}
        if not self.is_sqlite:
            kwargs.update(pooled, pool_pre_ping=False)
        elif url.startswith("sqlite+aiosqlite"):
            kwargs["module"] = sqlite_driver.dbapi()
            if ":memory:" not in url and "mode=memory" not in url:
                kwargs.update(pooled)
        try:
            self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        except Exception as exc:
            raise DatabaseUnavailable(f"database.url {_safe_url(url)}: {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_queue = WriteQueue()
        self._writer: asyncio.Task[Any] | None = None
        # A write transaction that waits for or holds the queue this long is logged.
        self.slow_seconds = 0.5
        self._slow_logged = -SLOW_LOG_INTERVAL
        self._slow_unlogged = 0  # slow transactions since the last line
        self._worst_held = 0.0  # the longest hold among them, and where
        self._worst_where = ""
        self._queued = 0  # transactions waiting for or holding the write queue
        self._released = 0  # transactions that have held it, ever
        self._checkpointer: asyncio.Task[None] | None = None
        self.checkpoints = 0  # passes of the checkpointer that ran
        self.restarts = 0  # passes that then let the next writer start the WAL over (``_restart``)
        self.last_checkpoint: tuple[int, int] | None = None  # (frames in the WAL, frames copied)

    def start_checkpointer(self, interval: float = 0.25) -> None:
        """SQLite file databases (the server): checkpoint the WAL from a thread every
        ``interval`` seconds, so that no commit on the event loop pays for it. Stopped by
        ``close``. A quarter of a second: at 400 round trips/s the WAL grows by ~20,000 frames
        a second (each write transaction adds a frame per page it touched, ~15), so a pass a
        second let it reach AUTOCHECKPOINT_PAGES between two passes."""
        path = self.engine.url.database
        if not self.is_sqlite or not path or path == ":memory:" or self._checkpointer is not None:
            return
        self._checkpointer = asyncio.create_task(
            self._checkpoint_loop(path, interval), name="sqlite-checkpoint"
        )

    @property
    def checkpointer_stopped(self) -> bool:
        return self._checkpointer is None or self._checkpointer.done()

    async def _checkpoint_loop(self, path: str, interval: float) -> None:
        connection: sqlite3.Connection | None = None
        running: asyncio.Future[Any] | None = None
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    running = asyncio.ensure_future(asyncio.to_thread(_checkpoint, connection, path))
                    connection, self.last_checkpoint = await asyncio.shield(running)
                    self.checkpoints += 1
                    frames, copied = self.last_checkpoint
                    if frames and frames == copied:  # all copied: the WAL may start over
                        async with self.write_turn():
                            running = asyncio.ensure_future(asyncio.to_thread(_restart, connection))
                            await asyncio.shield(running)
                        self.restarts += 1
                except sqlite3.Error as exc:
                    log.warning("SQLite WAL checkpoint failed (tried again in %.1f s): %s", interval, exc)
        finally:
            # Cancelled during a pass: its thread still uses the connection; closing it under that
            # thread crashes the process (sqlite3 is not safe for that), so wait for the pass first.
            if running is not None and not running.done():
                with contextlib.suppress(BaseException):
                    done = await running
                    if connection is None:  # the first pass: its thread opened the connection
                        connection = done[0]
            if connection is not None:
                connection.close()

    @property
    def safe_url(self) -> str:
        return _safe_url(self.url)

    @asynccontextmanager
    async def transaction(self, *, inline: bool = False) -> AsyncIterator[AsyncSession]:
        """A session in a transaction committed on success, rolled back on any exception.

        SQLite allows one writer: a transaction that read and then writes after another
        connection committed fails at once with "database is locked" (WAL snapshot), and
        concurrent writers otherwise sleep in SQLite's busy handler. On SQLite, transactions are
        therefore queued in-process (re-entrant within a task); PostgreSQL is unaffected.

        ``inline`` (SQLite): run the statements on the event loop's thread, so that the
        transaction holds the write queue only for its own work, never across a turn of the loop
        (``mdm.db.sqlite_driver.INLINE``). For short transactions of key look-ups and writes
        only (the command channel): a long statement would stall the loop.

        While an administrator's request is in progress (``mdm.db.audit_context``), the first
        transaction that changes something also writes its audit event, before it commits.
        """
        if not self.is_sqlite or self._writer is asyncio.current_task():
            async with self.sessionmaker() as session, session.begin():
                audit_context.watch(session)
                yield session
            return
        async with self.write_turn(inline) as turn:
            token = sqlite_driver.INLINE.set(True) if inline else None
            adapted: sqlite_driver.OneHopConnection | None = None
            session = self.sessionmaker()
            try:
                async with session.begin():
                    adapted = await _one_hop(session, self.immediate)
                    audit_context.watch(session)
                    yield session
            except OperationalError as exc:
                if adapted is not None and _locked(exc):
                    self._refused(adapted.lock_wait)
                raise
            finally:
                await _close(session, adapted)
                if token is not None:
                    sqlite_driver.INLINE.reset(token)
                if adapted is not None:
                    adapted.begin_immediate = False
                    turn.lock_wait, adapted.lock_wait = adapted.lock_wait, 0.0

    @asynccontextmanager
    async def write_turn(self, inline: bool = False) -> AsyncIterator[WriteTurn]:
        """SQLite: hold the in-process write queue (``transaction``'s, re-entrant only there)
        for a write transaction run by the caller (``mdm.db.sqlite_direct``); measured and
        logged as ``transaction``'s are (``WriteTurn.lock_wait``: the caller's wait for another
        process's write lock)."""
        asked = time.monotonic()
        released = self._released
        self._queued += 1
        try:
            await self._write_queue.acquire(inline)
            try:
                self._writer = asyncio.current_task()
                got = time.monotonic()
                behind = self._released - released  # transactions that held the queue meanwhile
                turn = WriteTurn()
                try:
                    yield turn
                finally:
                    self._writer = None
                    self._released += 1
                    self._measured(got - asked, time.monotonic() - got, behind, turn.lock_wait)
            finally:
                self._write_queue.release()
        finally:
            self._queued -= 1

    def holds_turn(self) -> bool:
        """Whether the running task holds the write queue (in ``transaction`` or ``write_turn``)."""
        return self._writer is not None and self._writer is asyncio.current_task()

    def _measured(self, waited: float, held: float, behind: int, lock_wait: float) -> None:
        db_metrics.WRITE_QUEUE_WAIT.observe(waited)
        db_metrics.WRITE_QUEUE_HOLD.observe(held)
        if self.immediate:
            db_metrics.LOCK_WAIT.observe(lock_wait)
            if lock_wait >= LOCK_WAIT_WARN_SECONDS:
                log.warning(
                    "SQLite write transaction waited %.0f ms for the write lock held by another "
                    "process (the push worker?); refused at %d ms", 1000 * lock_wait,
                    sqlite_driver.BUSY_TIMEOUT_MS,
                )
        self._slow(waited, held, behind, lock_wait)

    def _refused(self, lock_wait: float) -> None:
        db_metrics.LOCK_REFUSED.inc()
        log.error(
            "SQLite write transaction refused: another process held the write lock for %.0f ms "
            "(busy timeout %d ms); the transaction was rolled back", 1000 * lock_wait,
            sqlite_driver.BUSY_TIMEOUT_MS,
        )

    def _slow(self, waited: float, held: float, behind: int, lock_wait: float = 0.0) -> None:
        """Log a write transaction that waited or held SQLite's write queue long (at most one
        line per ``SLOW_LOG_INTERVAL`` seconds, with how many were not logged): what stalls every
        other writer. A wait names how many transactions held the queue meanwhile: one long
        holder and a queue of short ones (a stalled loop, a starved process) read differently.
        The line also names the longest holder among those not logged since the last line (the
        one logged is only the first slow one after the interval: long holders hid behind it)."""
        if max(waited, held) < self.slow_seconds:
            return
        self._slow_unlogged += 1
        now = time.monotonic()
        if now - self._slow_logged < SLOW_LOG_INTERVAL:
            if held >= self.slow_seconds and held > self._worst_held:
                self._worst_held, self._worst_where = held, _callers()
            return
        self._slow_logged = now
        more, self._slow_unlogged = self._slow_unlogged - 1, 0
        worst, self._worst_held = self._worst_held, 0.0
        log.warning(
            "SQLite write transaction waited %.0f ms for the write queue (behind %d transactions, "
            "%.1f ms each; %d queued now) and held it %.0f ms (in %s; %.0f ms of it waiting for "
            "another process's write lock); %d more slow since the last such line%s",
            1000 * waited, behind, 1000 * waited / behind if behind else 0.0,
            self._queued - 1, 1000 * held, _callers() or "?", 1000 * lock_wait, more,
            f", the longest held {1000 * worst:.0f} ms (in {self._worst_where or '?'})" if worst else "",
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    async def check(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounded probe for readiness
        """Open a connection and run a trivial query, or raise DatabaseUnavailable."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, OperationalError, DBAPIError, TimeoutError) as exc:
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseUnavailable(
                f"cannot reach the database {self.safe_url}: {str(reason).strip() or type(reason).__name__}"
                " (check database.url / MDM_DATABASE_URL and that the server is running)"
            ) from exc

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        await sqlite_direct.close(self)
        await point_read.close(self.engine)
        await prepared.close(self.engine)
        await self.engine.dispose()
