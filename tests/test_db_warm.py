"""A started server's PostgreSQL connections are open before the first request (issue 12, cold
polls after an outage): the pool's and the kept ones (``mdm.db.point_read``'s readers,
``mdm.db.prepared.autocommit``'s) open at start-up (``mdm.db.warm``), so that a burst at the
pool's concurrency starts no PostgreSQL backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import bindparam, event, select, text

from mdm.config import Config
from mdm.db import point_read, prepared, warm
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.server.runtime import open_context

_events: Any = Event.__table__
_LOOK_UP = select(_events.c.uuid).where(_events.c.uuid == bindparam("b_uuid"))
_DIRECT = prepared.Prepared(_LOOK_UP)
CONCURRENCY = 16


def _connects(db: Database) -> list[int]:
    """Every new DB-API connection the engine's pool opens from now on."""
    seen: list[int] = []
    event.listen(db.engine.sync_engine.pool, "connect", lambda *_: seen.append(1))
    return seen


async def _burst(db: Database, uses: int) -> None:
    """``uses`` look-ups of each kind the hot paths make, ``CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            assert await point_read.first(db.engine, _LOOK_UP, {"b_uuid": f"u{i}"}) is None
            async with prepared.autocommit(db.engine) as direct:
                assert await direct.execute(_DIRECT, {"b_uuid": f"u{i}"}) == []
            async with db.engine.connect() as pooled:
                assert (await pooled.execute(text("SELECT 1"))).scalar() == 1

    await asyncio.gather(*(one(i) for i in range(uses)))


@pytest.fixture
async def started(config: Config) -> AsyncIterator[Database]:
    if not config.database_url.startswith("postgresql"):
        pytest.skip("SQLite's connections are threads of the process: nothing to open ahead")
    ctx = await open_context(config)
    try:
        yield ctx.db
    finally:
        await ctx.db.close()


async def test_start_up_opens_the_pool_and_the_kept_connections(started: Database) -> None:
    pool: Any = started.engine.sync_engine.pool
    readers = point_read.pg_readers(started.engine)
    kept = prepared._kept(started.engine)
    assert readers.opened == readers.limit > 0 and len(readers.idle) == readers.limit
    assert kept.opened == kept.limit > 0 and len(kept.idle) == kept.limit
    # Every connection the pool may hold is open: the kept ones checked out, the others idle.
    assert pool.checkedout() == readers.limit + kept.limit
    assert pool.checkedin() + pool.checkedout() == pool.size()
    # ... and each is a PostgreSQL backend connected to this database.
    pids = [r.raw.get_server_pid() for r in readers.idle] + [k.raw.get_server_pid() for k in kept.idle]
    async with started.engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid = ANY(:p)"
            ),
            {"p": pids},
        )
        assert found.scalar() == len(pids)


async def test_a_burst_after_start_up_opens_no_connection(started: Database) -> None:
    connects = _connects(started)
    await _burst(started, 8 * CONCURRENCY)
    assert connects == []


async def test_warming_again_opens_nothing(started: Database) -> None:
    connects = _connects(started)
    assert await warm.warm(started) == 0
    assert connects == []


async def test_a_warm_up_out_of_time_leaves_the_rest_to_first_use(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL only")
    with caplog.at_level(logging.WARNING, logger="mdm.db.warm"):
        await warm.warm(db, seconds=0.0)
    assert "not all opened at start-up" in caplog.text
    # Nothing half-counted: what opened is usable, the rest opens on use.
    readers = point_read.pg_readers(db.engine)
    assert readers.opened == len(readers.idle)
    await _burst(db, 2 * CONCURRENCY)


async def test_sqlite_opens_nothing_ahead(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite only")
    connects = _connects(db)
    assert await warm.warm(db) == 0
    assert connects == []
