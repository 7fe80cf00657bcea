"""``Direct.block`` (issue 12, a wake-up's CPU on PostgreSQL): a few statements on an autocommit
connection as ONE transaction block, with settings local to it. The push dispatcher's take and
its deferral run this way: they must commit together or not at all, their settings must not stay
on a connection the command round trip shares, and a block that failed must never leave its
transaction open on a connection that is used again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from event_rows_support import EVENT_UUID, INSERT_EVENT, event_row
from sqlalchemy import bindparam, func, select

from mdm.db import prepared
from mdm.db.engine import Database

_SETTING = prepared.Prepared(select(func.current_setting(bindparam("b_name"))))


@pytest.fixture
async def pg(db: Database) -> AsyncIterator[Database]:
    if db.is_sqlite:
        pytest.skip("autocommit connections are PostgreSQL's")
    yield db


async def _seen(db: Database, guid: str) -> bool:
    async with db.session() as session:
        return (await session.scalar(EVENT_UUID, {"b_uuid": guid})) is not None


async def test_a_block_commits_its_statements_together_with_its_settings_local(pg: Database) -> None:
    async with prepared.autocommit(pg.engine) as direct:
        async with direct.block("SET LOCAL plan_cache_mode = force_custom_plan"):
            await direct.execute(INSERT_EVENT, event_row("b1"))
            await direct.execute(INSERT_EVENT, event_row("b2"))
            assert not await _seen(pg, "b1")  # not committed yet: another connection sees nothing
            setting = await direct.execute(_SETTING, {"b_name": "plan_cache_mode"})
            assert setting[0][0] == "force_custom_plan"
        assert await _seen(pg, "b1") and await _seen(pg, "b2")
        # The setting ended with the block: the connection goes on as the others do.
        assert (await direct.execute(_SETTING, {"b_name": "plan_cache_mode"}))[0][0] == "auto"
        await direct.execute(INSERT_EVENT, event_row("b3"))  # autocommit again: committed by itself
        assert await _seen(pg, "b3")
    assert not direct.broken


async def test_a_failed_block_commits_nothing_and_its_connection_is_closed(pg: Database) -> None:
    async with prepared.autocommit(pg.engine) as direct:
        await direct.execute(INSERT_EVENT, event_row("dup"))
    with pytest.raises(Exception, match=r"duplicate|unique"):
        async with prepared.autocommit(pg.engine) as again:
            assert again is direct
            async with again.block():
                await again.execute(INSERT_EVENT, event_row("first-of-block"))
                await again.execute(INSERT_EVENT, event_row("dup"))
    assert direct.broken and direct.connection.closed
    assert not await _seen(pg, "first-of-block")


async def test_the_callers_error_inside_a_block_commits_nothing(pg: Database) -> None:
    with pytest.raises(LookupError):
        async with prepared.autocommit(pg.engine) as direct, direct.block():
            await direct.execute(INSERT_EVENT, event_row("mine"))
            raise LookupError("the caller gave up midway")
    assert direct.broken and direct.connection.closed  # its transaction was open: not reused
    assert not await _seen(pg, "mine")


async def test_a_failed_block_on_a_pool_connection_does_not_go_back_to_the_pool_open(pg: Database) -> None:
    kept = prepared._kept(pg.engine)
    kept.closed = True  # every use takes a pool connection
    try:
        with pytest.raises(LookupError):
            async with prepared.autocommit(pg.engine) as direct, direct.block():
                assert direct.raw is None
                await direct.execute(INSERT_EVENT, event_row("pooled"))
                raise LookupError("midway")
        assert direct.connection.closed
        # Every pool connection handed out after it is outside any transaction block.
        for _ in range(3):
            async with pg.engine.connect() as connection:
                raw: Any = (await connection.get_raw_connection()).driver_connection
                assert not raw.is_in_transaction()
        assert not await _seen(pg, "pooled")
        async with prepared.autocommit(pg.engine) as pooled, pooled.block():
            await pooled.execute(INSERT_EVENT, event_row("pooled-ok"))
        assert await _seen(pg, "pooled-ok")
    finally:
        kept.closed = False
