"""PostgreSQL connections kept out of an engine's pool in autocommit mode, handed out in turn.

Two users: ``mdm.db.prepared.autocommit`` (the command round trip's statements, ``Direct``) and
``mdm.db.point_read`` (the hot paths' look-ups). Each wraps a kept connection in an object of its
own that lives as long as the connection (the asyncpg statements prepared on it); ``Kept`` only
opens, lends, takes back and closes them.

When all are busy, a use waits for the next one given back (up to ``waiting`` per kept
connection, first come first served): a kept connection is busy for a round trip or two, and a
pool connection instead (what keeping them saves: a checkout and return, a greenlet hand-off
each, the switch to autocommit and back) was the common case under 16 concurrent round trips
with 4 kept. Beyond that many waiting, or when one is closed instead of given back, a use takes
a pool connection (``take`` gives None): one slow statement must not hold up a queue of others
without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class Held(Protocol):
    """What ``Kept`` needs of the object wrapping a kept connection."""

    connection: AsyncConnection
    # A statement on it failed or was interrupted: its state is unknown, it is closed, not kept.
    broken: bool


H = TypeVar("H", bound=Held)


class Kept(Generic[H]):
    """Up to ``limit`` connections of one engine, each wrapped by ``wrap(connection, asyncpg
    connection)``; the idle ones last in, first out."""

    __slots__ = ("closed", "idle", "limit", "opened", "waiters", "waiting", "wrap")

    def __init__(self, limit: int, waiting: int, wrap: Callable[[AsyncConnection, Any], H]) -> None:
        self.idle: list[H] = []
        self.opened = 0
        self.limit = limit
        self.waiting = waiting  # uses that may wait per kept connection
        self.wrap = wrap
        self.closed = False
        self.waiters: collections.deque[asyncio.Future[H]] = collections.deque()

    async def take(self, engine: AsyncEngine) -> H | None:
        """A kept connection (waiting for one if all are busy), or None: take a pool connection."""
        if self.idle:
            return self.idle.pop()
        if self.closed:
            return None
        if self.opened >= self.limit:
            return await self._wait() if len(self.waiters) < self.limit * self.waiting else None
        self.opened += 1
        try:
            connection = await engine.connect()
        except BaseException:
            self.opened -= 1
            self._release_waiter()
            raise
        adapted: Any = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        adapted.autocommit = True  # no BEGIN: every statement its own transaction
        return self.wrap(connection, adapted._connection)

    async def _wait(self) -> H | None:
        """The next kept connection given back (None: none will be; take a pool connection)."""
        waiter: asyncio.Future[H] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_over(waiter.result())  # handed over just as this use was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise
        except _NoneKept:
            return None

    def _hand_over(self, held: H) -> None:
        """``held`` to the first use still waiting, else back to the idle ones."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(held)
                return
        self.idle.append(held)

    def _release_waiter(self) -> None:
        """One kept connection fewer: the first use waiting takes a pool connection instead."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_NoneKept())
                return

    async def give_back(self, held: H) -> None:
        if held.broken or self.closed:
            # Its state is unknown, or the engine is closing (its pool may be disposed already,
            # which would keep a connection checked in now open): closed, never back to the pool.
            await self.discard(held, invalidate=True)
        else:
            self._hand_over(held)

    async def discard(self, held: H, *, invalidate: bool) -> None:
        """Close ``held``'s connection (``invalidate``: its state is unknown)."""
        self.opened -= 1
        self._release_waiter()
        connection = held.connection
        try:
            if invalidate:
                await connection.invalidate()
            else:
                adapted: Any = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
                adapted.autocommit = False
        finally:
            await connection.close()

    async def close(self) -> None:
        """Close the idle ones (before ``engine.dispose()``); those in use are closed when they
        are given back, and the uses waiting take pool connections."""
        self.closed = True
        while self.waiters:
            self._release_waiter()
        while self.idle:
            await self.discard(self.idle.pop(), invalidate=False)


def pool_share(engine: AsyncEngine, share: int) -> int:
    """One connection of ``engine``'s pool in ``share`` (none for a pool without a size)."""
    size: int = getattr(engine.sync_engine.pool, "size", lambda: 0)()
    return size // share


class _NoneKept(Exception):
    """No kept connection for this waiting use after all (it takes a pool connection)."""
