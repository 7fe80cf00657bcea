"""``BulkService.view``: the operation's row is read at every call, while its commands' counts (a
GROUP BY over all of them, most of a second at 10^6) are kept at least ``COUNTS_KEPT`` times as
long as they took, and taken again when the operation's state changes. Real SQLite or PostgreSQL;
the count is slowed on purpose so that its duration, not the machine's load, sets how long it is
kept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bulk_support import add_devices

from mdm.core import store_bulk
from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import CommandStatus, Protocol
from mdm.ios.commands import IosCommandTranslator

SLOW = 0.2  # seconds per count: kept >= 20 * 0.2 = 4 s, far beyond what the test waits


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = store_bulk.status_counts

    async def slow_counts(session: Any, bulk_id: int) -> tuple[dict[str, int], int]:
        calls.append(bulk_id)
        await asyncio.sleep(SLOW)
        counts: tuple[dict[str, int], int] = await real(session, bulk_id)
        return counts

    monkeypatch.setattr(store_bulk, "status_counts", slow_counts)
    return calls


def _service(db: Database, *, view_ttl: float) -> BulkService:
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    return BulkService(db, translators, Pushers(), batch_size=2, view_ttl=view_ttl)


async def test_the_operation_is_fresh_while_its_counts_are_kept(db: Database, counted: list[int]) -> None:
    await add_devices(db, 5)
    svc = _service(db, view_ttl=0.01)
    op = await svc.create("Block", {}, by="test")
    assert await svc.step(op.id)
    first = await svc.view(op.id)
    assert (first.op.queued, first.count(CommandStatus.PROCESSING), len(counted)) == (2, 2, 1)

    assert await svc.step(op.id)
    await asyncio.sleep(0.05)  # past view_ttl, far within 20 times the count's duration
    second = await svc.view(op.id)
    assert second.op.queued == 4  # the row: read again
    assert second.count(CommandStatus.PROCESSING) == 2 and len(counted) == 1  # the counts: kept

    assert not await svc.step(op.id)  # the last batch: the state moves to queued
    third = await svc.view(op.id)
    assert third.op.state == "queued" and third.op.queued == 5
    assert third.count(CommandStatus.PROCESSING) == 5 and len(counted) == 2  # taken again


async def test_no_ttl_counts_at_every_call(db: Database, counted: list[int]) -> None:
    await add_devices(db, 3)
    svc = _service(db, view_ttl=0)
    op = await svc.create("Block", {}, by="test")
    assert await svc.step(op.id)
    assert (await svc.view(op.id)).count(CommandStatus.PROCESSING) == 2
    assert not await svc.step(op.id)
    assert (await svc.view(op.id)).count(CommandStatus.PROCESSING) == 3
    assert len(counted) == 2
