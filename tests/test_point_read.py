"""``mdm.db.point_read``: the hot paths' read-only look-ups take no pool connection per look-up on
SQLite (a burst of them made the pool open and close overflow connections: 200 ms each at 1,500
KES syncs/s), see every committed write, survive a failing statement and give the connection back
at close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, text

from mdm.db import point_read, prepared
from mdm.db.engine import Database

SQLITE_ONLY = pytest.mark.skipif("not config.getoption('--pg', default=False) is False", reason="")

def _counting(db: Database) -> dict[str, int]:
    counts = {"checkout": 0, "connect": 0}

    def checkout(*_: Any) -> None:
        counts["checkout"] += 1

    def connect(*_: Any) -> None:
        counts["connect"] += 1

    event.listen(db.engine.sync_engine.pool, "checkout", checkout)
    event.listen(db.engine.sync_engine.pool, "connect", connect)
    return counts

async def test_a_burst_of_look_ups_takes_no_pool_connection_each(db: Database) -> None:
    stmt = text("SELECT CAST(:n AS INTEGER) AS n")
    await point_read.first(db.engine, stmt, {"n": 0})  # the reader is opened once
    counts = _counting(db)
    # While other requests hold pool connections across awaits (as write transactions do).
    held = [await db.engine.connect() for _ in range(3)]
    try:
        rows = await asyncio.gather(*(point_read.first(db.engine, stmt, {"n": i}) for i in range(500)))
    finally:
        for conn in held:
            await conn.close()
    assert [row.n for row in rows if row is not None] == list(range(500))
    if db.is_sqlite:
        assert counts["checkout"] == 3  # only the three held above
    else:
        # PostgreSQL: up to one pool connection in PG_READER_SHARE kept for look-ups (each opened
        # once); the look-ups beyond them take a pooled connection each, as before.
        kept = db.engine.sync_engine.pool.size() // point_read.PG_READER_SHARE  # type: ignore[attr-defined]
        assert kept >= 1
        assert counts["checkout"] <= 503
        assert counts["checkout"] - 3 < 500, "no look-up ran on a kept reader"

async def test_look_ups_see_every_committed_write(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE pr_probe (id INTEGER PRIMARY KEY, v TEXT)"))
        await session.execute(text("INSERT INTO pr_probe VALUES (1, 'a')"))
    stmt = text("SELECT v FROM pr_probe WHERE id = :id")
    assert (await point_read.first(db.engine, stmt, {"id": 1})) == ("a",)
    async with db.transaction() as session:
        await session.execute(text("UPDATE pr_probe SET v = 'b' WHERE id = 1"))
    assert (await point_read.first(db.engine, stmt, {"id": 1})) == ("b",)
    assert await point_read.first(db.engine, stmt, {"id": 2}) is None

async def test_a_failing_statement_discards_the_reader_and_the_next_works(db: Database) -> None:
    with pytest.raises(Exception, match=r"no such table|does not exist"):
        await point_read.first(db.engine, text("SELECT x FROM no_such_table"), {})
    assert (await point_read.first(db.engine, text("SELECT 7 AS n"), {})) == (7,)

async def test_close_gives_the_reader_back(db: Database) -> None:
    await point_read.first(db.engine, text("SELECT 1"), {})
    pool = db.engine.sync_engine.pool
    assert pool.checkedout() == 1  # type: ignore[attr-defined]  # the reader (both engines)
    await point_read.close(db.engine)
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    assert (await point_read.first(db.engine, text("SELECT 2"), {})) == (2,)  # reopened on use


def test_the_configured_pool_size_holds_on_both_engines(database_url: str) -> None:
    db = Database(database_url, pool_size=17)
    try:
        pool = db.engine.sync_engine.pool
        # Up to twice the setting, all kept open once opened (no overflow closed on return).
        assert (pool.size(), pool._max_overflow) == (34, 0)  # type: ignore[attr-defined]
    finally:
        asyncio.run(db.close())


async def test_postgresql_look_ups_run_on_a_kept_reader_without_a_transaction(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's kept readers")
    stmt = text("SELECT pg_backend_pid() AS pid, now() AS began")
    first = await point_read.first(db.engine, stmt, {})
    counts = _counting(db)
    again = [await point_read.first(db.engine, stmt, {}) for _ in range(20)]
    assert counts["checkout"] == 0  # one after the other: the same kept connection
    assert first is not None and {row.pid for row in again if row is not None} == {first.pid}
    # Outside any transaction block: each statement its own transaction (a held one would give
    # the same now(), its start, to every statement: a stale snapshot).
    assert len({row.began for row in again if row is not None}) == len(again)


async def test_postgresql_a_lost_reader_is_replaced_and_the_look_up_answers(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's kept readers")
    stmt = text("SELECT pg_backend_pid() AS pid")
    before = await point_read.first(db.engine, stmt, {})
    assert before is not None
    async with db.engine.connect() as other:  # the server ends the reader's backend
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": before.pid})
    after = await point_read.first(db.engine, stmt, {})  # (the failed reader discarded)
    assert after is not None and after.pid != before.pid
    later = await point_read.first(db.engine, stmt, {})
    assert later is not None and later.pid != before.pid
    await point_read.close(db.engine)
    await prepared.close(db.engine)  # the look-up after the loss ran on a kept autocommit connection
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_postgresql_a_cancelled_look_up_does_not_keep_its_reader(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's kept readers")
    slow = asyncio.ensure_future(point_read.first(db.engine, text("SELECT pg_sleep(5) IS NULL AS slept"), {}))
    await asyncio.sleep(0.3)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # The next look-up is answered at once, on a reader that is not busy with the cancelled one.
    row = await asyncio.wait_for(point_read.first(db.engine, text("SELECT 3 AS n"), {}), 2)
    assert row == (3,)
    await point_read.close(db.engine)
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def _open_every_reader(db: Database) -> int:
    """Open all of the engine's kept readers (a burst as wide as their number); how many."""
    kept = db.engine.sync_engine.pool.size() // point_read.PG_READER_SHARE  # type: ignore[attr-defined]
    stmt = text("SELECT pg_sleep(0.05) IS NULL AS slept")
    await asyncio.gather(*(point_read.first(db.engine, stmt, {}) for _ in range(kept)))
    return kept


async def test_postgresql_a_burst_waits_for_a_kept_reader_instead_of_the_pool(db: Database) -> None:
    """More concurrent look-ups than kept readers (a burst of cold polls): up to
    WAITERS_PER_READER per reader wait for one to be given back, none takes a pool connection."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's kept readers")
    kept = await _open_every_reader(db)
    counts = _counting(db)
    stmt = text("SELECT CAST(:n AS INTEGER) AS n")
    burst = kept * (1 + point_read.WAITERS_PER_READER)
    rows = await asyncio.gather(*(point_read.first(db.engine, stmt, {"n": i}) for i in range(burst)))
    assert [row.n for row in rows if row is not None] == list(range(burst))
    assert counts == {"checkout": 0, "connect": 0}
    await point_read.close(db.engine)
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_postgresql_cancelled_waiters_lose_no_reader_and_close_frees_the_rest(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's kept readers")
    kept = await _open_every_reader(db)
    slow = text("SELECT 5 AS n FROM pg_sleep(0.3)")
    busy = [asyncio.ensure_future(point_read.first(db.engine, slow, {})) for _ in range(kept)]
    await asyncio.sleep(0.05)
    one = text("SELECT 1 AS n")
    waiting = [asyncio.ensure_future(point_read.first(db.engine, one, {})) for _ in range(3)]
    await asyncio.sleep(0.05)
    waiting[0].cancel()  # waiting, then cancelled: it holds no reader
    assert [await b for b in busy] == [(5,)] * kept
    assert [await w for w in waiting[1:]] == [(1,), (1,)]
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    # Every reader is back: as many slow look-ups at once as readers, and no pool connection.
    counts = _counting(db)
    again = await asyncio.gather(*(point_read.first(db.engine, slow, {}) for _ in range(kept)))
    assert again == [(5,)] * kept and counts["checkout"] == 0
    # Closed while look-ups wait: they run the pooled way, and every connection goes back.
    busy = [asyncio.ensure_future(point_read.first(db.engine, slow, {})) for _ in range(kept)]
    await asyncio.sleep(0.05)
    late = asyncio.ensure_future(point_read.first(db.engine, text("SELECT 2 AS n"), {}))
    await asyncio.sleep(0.05)
    await point_read.close(db.engine)
    assert await late == (2,)
    assert [await b for b in busy] == [(5,)] * kept
    await prepared.close(db.engine)  # the late look-up ran on a kept autocommit connection
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
