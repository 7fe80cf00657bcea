"""PostgreSQL: open a server's database connections at start-up, before the listeners accept.

The engine's pool and the connections kept out of it (``mdm.db.point_read``'s readers,
``mdm.db.prepared.autocommit``'s) open lazily, on first use. After a restart the first burst (a
fleet coming back after an outage) therefore paid, inside its requests, for every one of them: a
PostgreSQL backend's fork and authentication, and asyncpg's and SQLAlchemy's set-up of the
connection (the server's settings, the type codecs' introspection). Measured with
``scripts/cold-poll-http.py --detail`` (10^4 fleet, 16 concurrent cold polls): ~60 of ~150 µs of
backend CPU per cold poll was backends that connected during the pass.

``warm`` opens them all concurrently, bounded in time: a slow or failing database only leaves
the rest to be opened on use, as before (start-up already checked that it is reachable). SQLite
is left as it is: its connections are threads of this process, opened in microseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mdm.db import point_read, prepared
from mdm.db.engine import Database

log = logging.getLogger(__name__)

WARM_SECONDS = 10.0  # start-up waits at most this long for the connections


async def warm(db: Database, seconds: float = WARM_SECONDS) -> int:
    """Open ``db``'s pool connections and its kept connections (PostgreSQL with asyncpg; else
    nothing); returns how many were opened. Logs one line either way."""
    engine = db.engine
    if db.is_sqlite or not prepared.autocommits(engine):
        return 0
    started = time.monotonic()
    kept = (point_read.pg_readers(engine), prepared._kept(engine))
    counts = [0, 0, 0]

    async def kept_ones(which: int) -> None:
        counts[which] = await kept[which].fill(engine)

    async def pooled() -> None:
        counts[2] = await _fill_pool(engine, sum(k.limit - k.opened for k in kept))

    try:
        async with asyncio.timeout(seconds):
            # The kept ones first take the pool's idle connection (the one start-up's check and
            # migrations left); the pool's others open beside them.
            await asyncio.gather(kept_ones(0), kept_ones(1), pooled())
    except Exception as exc:
        log.warning(
            "database connections not all opened at start-up (%s; the rest open on first use): "
            "%d kept readers, %d kept for autocommit, %d pooled in %.0f ms",
            str(exc) or type(exc).__name__, kept[0].opened, kept[1].opened,
            _pooled_open(engine), 1000 * (time.monotonic() - started),
        )
        return sum(counts)
    log.info(
        "database connections ready: %d kept readers, %d kept for autocommit, %d pooled (%d "
        "opened) in %.0f ms",
        kept[0].opened, kept[1].opened, _pooled_open(engine), sum(counts),
        1000 * (time.monotonic() - started),
    )
    return sum(counts)


def _pooled_open(engine: AsyncEngine) -> int:
    """The pool's open connections not kept out of it (idle in the pool)."""
    checkedin: int = getattr(engine.sync_engine.pool, "checkedin", lambda: 0)()
    return checkedin


async def _fill_pool(engine: AsyncEngine, kept_to_open: int) -> int:
    """Open the pool's connections up to its size, less ``kept_to_open`` (those the kept ones
    are about to take out of it), by holding that many at once; returns how many were opened."""
    pool = engine.sync_engine.pool
    size = getattr(pool, "size", None)
    if size is None:
        return 0
    existing = pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]
    missing: int = size() - existing - kept_to_open
    if missing <= 0:
        return 0
    # Every connection the pool holds idle, and ``missing`` more: checked out at once, the pool
    # opens the new ones concurrently.
    wanted = pool.checkedin() + missing  # type: ignore[attr-defined]
    held: list[AsyncConnection] = []

    async def one() -> None:
        held.append(await engine.connect())

    try:
        results = await asyncio.gather(*(one() for _ in range(wanted)), return_exceptions=True)
    finally:
        for connection in held:
            await connection.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return missing
