"""The sync's transaction and the last-sync write-behind take a device's rows in one order.

Found by ``mdm bench kes`` on PostgreSQL: a sync locked its ``kes_devices`` row and then its
``devices`` row while the batched last-sync flush had updated ``devices`` and waited for
``kes_devices``: "deadlock detected", answered 500. Every transaction that takes both now takes
``devices`` first (the identity paths did already).
"""

from __future__ import annotations

import asyncio

import pytest
from kes_sync_support import new_agent

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.kes import inventory, store_sync


async def test_a_sync_and_the_last_sync_flush_do_not_deadlock(db: Database, config: Config) -> None:
    if db.is_sqlite:
        pytest.skip("row locks are PostgreSQL's (SQLite has one writer)")
    agent = await new_agent(db, config)
    flush_done = asyncio.Event()

    async def flush() -> None:
        async with db.transaction() as session:
            await store_sync.write_last_sync(session, [(agent.device_id, utcnow())])
        flush_done.set()

    async with db.transaction() as session:  # the sync's transaction, as service_sync runs it
        assert await store_sync.lock_state(session, agent.device_id) is not None
        flusher = asyncio.create_task(flush())
        await asyncio.sleep(0.5)  # the flush runs into the sync's locks
        # Before the fix the flush held the devices row here and waited for kes_devices: this
        # lock then waited for the flush, and PostgreSQL broke the cycle with an error.
        await store_sync.lock_device_columns(session, agent.device_id, inventory.FACT_COLUMNS)
        assert not flush_done.is_set()  # the flush waits for the sync, not the other way round
    await asyncio.wait_for(flusher, 10)
