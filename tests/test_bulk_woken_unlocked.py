"""The push worker's receipts (``BulkService.accepted``) do not wait for a bulk batch that holds
the operation's row (PostgreSQL: from its start to its commit): the count is kept and written
once the row is free, exactly once. Real SQLite or PostgreSQL (SQLite: written at once)."""

from __future__ import annotations

import asyncio

import pytest
from bulk_support import add_devices
from sqlalchemy import select, text

from mdm.core import bulk
from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import BulkOperation, Protocol
from mdm.ios.commands import IosCommandTranslator


def _service(db: Database) -> BulkService:
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    return BulkService(db, translators, Pushers(), batch_size=2)


async def _woken(db: Database, bulk_id: int) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(BulkOperation.woken).where(BulkOperation.id == bulk_id)) or 0)


async def test_receipts_do_not_wait_for_a_batch_holding_the_operation(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite's one writer: nobody holds a row between statements")
    monkeypatch.setattr(bulk, "WOKEN_RETRY", 0.05, raising=False)
    await add_devices(db, 3)
    svc = _service(db)
    op = await svc.create("Block", {}, by="test")
    await svc.accepted({f"bulk:{op.id}": 2})
    assert await _woken(db, op.id) == 2

    released = asyncio.Event()

    async def batch_holding_the_row() -> None:  # as ``_step`` does: FOR UPDATE until its commit
        async with db.transaction() as session:
            await session.execute(text("SELECT id FROM bulk_operations WHERE id = :id FOR UPDATE"),
                                  {"id": op.id})
            held.set()
            await released.wait()

    held = asyncio.Event()
    holder = asyncio.create_task(batch_holding_the_row())
    await held.wait()
    # Returns while the row is held (before: waited for the holder, which waits for this).
    await asyncio.wait_for(svc.accepted({f"bulk:{op.id}": 5, "command": 1}), timeout=10)
    await asyncio.wait_for(svc.accepted({f"bulk:{op.id}": 1}), timeout=10)
    assert await _woken(db, op.id) == 2
    released.set()
    await holder
    async with asyncio.timeout(10):  # written by the retry once the row is free
        while await _woken(db, op.id) != 8:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # several retries' worth: nothing counted twice
    assert await _woken(db, op.id) == 8


async def test_receipts_add_at_once_when_the_row_is_free(db: Database) -> None:
    await add_devices(db, 2)
    svc = _service(db)
    op = await svc.create("Block", {}, by="test")
    await svc.accepted({f"bulk:{op.id}": 3, f"bulk:{op.id + 100}": 4})  # (an unknown one: dropped)
    await svc.accepted({f"bulk:{op.id}": 1})
    assert await _woken(db, op.id) == 4
    assert not svc._unwritten
