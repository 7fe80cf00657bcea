"""A transaction that runs prepared statements leaves no garbage for the cycle collector.

``prepared.connection_of`` kept the session's transaction in ``session.info`` (session -> info ->
transaction -> session): every check-in message left ~42 objects (the session, its transaction,
the connection and their event dispatchers) to the cycle collector. In a check-in storm each
young collection (100,000 objects) then freed ~1,800 of those at once and stopped the event loop
for 200-900 ms (10^4 fleet bench, load 9-12) with SQLite's write queue behind the stalled holder."""

from __future__ import annotations

import gc

from sqlalchemy import select

from mdm.db import prepared
from mdm.db.engine import Database
from mdm.db.models import Device

BY_ID = prepared.Prepared(select(Device.id).where(Device.id == -1))


async def test_a_transaction_with_prepared_statements_leaves_no_cyclic_garbage(db: Database) -> None:
    async def one() -> None:
        async with db.transaction(inline=True) as session:
            assert await BY_ID.execute_in(session, {}) == []
            assert await BY_ID.execute_in(session, {}) == []  # (the cached connection)

    await one()  # (first-use caches: compiled forms, pool connection)
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            await one()
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_the_connection_is_asked_for_once_per_transaction(db: Database) -> None:
    async with db.transaction() as session:
        first = await prepared.connection_of(session)
        assert await prepared.connection_of(session) is first
    async with db.transaction() as session:
        assert await prepared.connection_of(session) is await session.connection()
