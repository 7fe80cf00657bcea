"""``mdm.db.prepared.autocommit`` on PostgreSQL hands out connections kept out of the pool (issue
12, delivery CPU): no pool checkout per use, each statement its own transaction straight on
asyncpg, errors reported as SQLAlchemy reports them, and a connection whose statement failed or
was interrupted is closed rather than used again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from event_rows_support import EVENT_UUID, INSERT_EVENT, SELECT_EVENT, event_row
from sqlalchemy import Integer, String, bindparam, cast, event, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from mdm.db import prepared
from mdm.db.engine import Database

_NUMBER = prepared.Prepared(select(cast(bindparam("b_x", type_=String()), Integer)))


@pytest.fixture
async def pg(db: Database) -> AsyncIterator[Database]:
    if db.is_sqlite:
        pytest.skip("autocommit connections are PostgreSQL's (SQLite runs inline)")
    yield db


def _checkouts(db: Database) -> list[int]:
    seen: list[int] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *_: seen.append(1))
    return seen


async def test_a_kept_connection_serves_one_use_after_another_without_a_checkout(pg: Database) -> None:
    async with prepared.autocommit(pg.engine) as first:
        await first.execute(INSERT_EVENT, event_row("a"))
    checkouts = _checkouts(pg)
    for _ in range(5):
        async with prepared.autocommit(pg.engine) as again:
            assert again is first
            assert [r[0] for r in await again.execute(SELECT_EVENT, {"b_uuid": "a"})] == ["a"]
    assert checkouts == []
    # Each statement committed by itself: another connection sees it.
    async with pg.session() as session:
        assert (await session.scalars(EVENT_UUID, {"b_uuid": "a"})).all() == ["a"]


async def test_a_use_beyond_the_kept_ones_waits_for_one_given_back(pg: Database) -> None:
    limit = prepared._kept(pg.engine).limit
    assert limit >= 1
    held = [prepared.autocommit(pg.engine) for _ in range(limit)]
    directs = [await cm.__aenter__() for cm in held]
    assert all(d.raw is not None for d in directs)
    checkouts = _checkouts(pg)
    got: list[prepared.Direct] = []

    async def use() -> None:
        async with prepared.autocommit(pg.engine) as direct:
            got.append(direct)
            await direct.execute(INSERT_EVENT, event_row(str(uuid.uuid4())))

    waiting = asyncio.create_task(use())
    await asyncio.sleep(0.05)
    assert got == []  # waiting, not on a pool connection
    await held[0].__aexit__(None, None, None)
    async with asyncio.timeout(10):
        await waiting
    assert got == [directs[0]] and checkouts == []
    for cm in held[1:]:
        await cm.__aexit__(None, None, None)


async def test_with_many_waiting_a_use_takes_a_pool_connection(pg: Database) -> None:
    kept = prepared._kept(pg.engine)
    held = [prepared.autocommit(pg.engine) for _ in range(kept.limit)]
    for cm in held:
        await cm.__aenter__()
    waiters = [asyncio.create_task(_hold_briefly(pg)) for _ in range(kept.limit * prepared.WAITERS_PER_KEPT)]
    await asyncio.sleep(0.05)
    assert len(kept.waiters) == kept.limit * prepared.WAITERS_PER_KEPT
    async with asyncio.timeout(10), prepared.autocommit(pg.engine) as extra:
        assert extra.raw is None  # a plain pool connection
        await extra.execute(INSERT_EVENT, event_row("pooled"))
    for cm in held:
        await cm.__aexit__(None, None, None)
    async with asyncio.timeout(10):
        await asyncio.gather(*waiters)
    assert len(kept.idle) == kept.limit and not kept.waiters


async def _hold_briefly(db: Database) -> None:
    async with prepared.autocommit(db.engine) as direct:
        assert direct.raw is not None
        await direct.execute(SELECT_EVENT, {"b_uuid": "x"})


async def test_a_waiting_use_cancelled_leaves_the_connection_to_the_next(pg: Database) -> None:
    kept = prepared._kept(pg.engine)
    held = [prepared.autocommit(pg.engine) for _ in range(kept.limit)]
    for cm in held:
        await cm.__aenter__()
    first = asyncio.create_task(_hold_briefly(pg))
    second = asyncio.create_task(_hold_briefly(pg))
    await asyncio.sleep(0.05)
    first.cancel()
    await held[0].__aexit__(None, None, None)
    async with asyncio.timeout(10):
        await second
    with pytest.raises(asyncio.CancelledError):
        await first
    for cm in held[1:]:
        await cm.__aexit__(None, None, None)
    assert len(kept.idle) == kept.limit and kept.opened == kept.limit


async def test_a_failed_statement_is_reported_as_sqlalchemy_does_and_its_connection_closed(
    pg: Database,
) -> None:
    async with prepared.autocommit(pg.engine) as direct:
        await direct.execute(INSERT_EVENT, event_row("dup"))
    with pytest.raises(IntegrityError):
        async with prepared.autocommit(pg.engine) as again:
            assert again is direct
            await again.execute(INSERT_EVENT, event_row("dup"))
    assert direct.broken and direct.connection.closed
    async with prepared.autocommit(pg.engine) as fresh:
        assert fresh is not direct
        assert len(await fresh.execute(SELECT_EVENT, {"b_uuid": "dup"})) == 1


async def test_an_error_of_the_callers_own_keeps_the_connection(pg: Database) -> None:
    with pytest.raises(LookupError):
        async with prepared.autocommit(pg.engine) as direct:
            await direct.execute(INSERT_EVENT, event_row("mine"))
            raise LookupError("the caller's decision, not the connection's")
    async with prepared.autocommit(pg.engine) as again:
        assert again is direct and not again.broken


async def test_a_statement_cancelled_midway_closes_its_connection(pg: Database) -> None:
    sleep = prepared.Prepared(select(bindparam("b_x", type_=Integer())))
    async with prepared.autocommit(pg.engine) as warm:
        await warm.execute(SELECT_EVENT, {"b_uuid": "x"})

    async def slow() -> None:
        async with prepared.autocommit(pg.engine) as direct:
            assert direct is warm
            await direct.execute(prepared.Prepared(select(_pg_sleep())), {})

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert warm.broken and warm.connection.closed
    async with prepared.autocommit(pg.engine) as fresh:
        assert fresh is not warm
        assert (await fresh.execute(sleep, {"b_x": 3}))[0][0] == 3


def _pg_sleep() -> Any:
    from sqlalchemy import func

    return func.pg_sleep(5)


async def test_close_gives_the_kept_connections_back(pg: Database) -> None:
    # A Database of its own on the test's database (the URL as the fixture resolved it: under
    # pytest-xdist the worker's own database).
    db = Database(pg.engine.url.render_as_string(hide_password=False))
    async with prepared.autocommit(db.engine) as held:
        async with prepared.autocommit(db.engine) as idle:
            await idle.execute(SELECT_EVENT, {"b_uuid": str(uuid.uuid4())})
        assert idle is not held and idle.raw is not None and held.raw is not None
        await db.close()  # while ``held`` is in use: closed when it is given back
        assert idle.connection.closed and not held.connection.closed
    assert held.connection.closed
    pool: Any = db.engine.sync_engine.pool
    assert pool.checkedout() == 0


async def test_any_driver_error_is_a_dbapi_error(pg: Database) -> None:
    async with prepared.autocommit(pg.engine) as direct:
        with pytest.raises(DBAPIError):
            await direct.execute(_NUMBER, {"b_x": "not a number"})
