"""last_seen write-behind: batches are written in bounded transactions; a failure keeps the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.ios.state import LastSeen
from tests.write_holds import busy_loop, record_holds


async def _devices(db: Database, count: int) -> list[int]:
    async with db.transaction() as session:
        rows = [Device(protocol=Protocol.IOS.value, identifier=f"udid-{i}") for i in range(count)]
        session.add_all(rows)
        await session.flush()
        return [d.id for d in rows]


class CountingDatabase:
    """The real database; counts transactions and can fail the n-th one."""

    def __init__(self, db: Database, fail_at: int | None = None) -> None:
        self.db, self.fail_at, self.transactions = db, fail_at, 0

    @asynccontextmanager
    async def transaction(self, *, inline: bool = False) -> AsyncIterator[Any]:
        self.transactions += 1
        if self.transactions == self.fail_at:
            raise ConnectionError("database went away")
        async with self.db.transaction(inline=inline) as session:
            yield session


async def test_flush_writes_in_chunks(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await _devices(db, 7)
    monkeypatch.setattr(LastSeen, "CHUNK", 3)
    seen = LastSeen()
    for device_id in ids:
        seen.touch(device_id)
    counting = CountingDatabase(db)
    assert await seen.flush(counting) == 7  # type: ignore[arg-type]
    assert counting.transactions == 3 and len(seen) == 0
    async with db.session() as session:
        stamps = (await session.scalars(select(Device.last_seen_at).where(Device.id.in_(ids)))).all()
    assert len(stamps) == 7 and all(s is not None for s in stamps)


async def test_a_failed_chunk_keeps_what_was_not_written(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _devices(db, 7)
    monkeypatch.setattr(LastSeen, "CHUNK", 3)
    seen = LastSeen()
    for device_id in ids:
        seen.touch(device_id)
    with pytest.raises(ConnectionError):
        await seen.flush(CountingDatabase(db, fail_at=2))  # type: ignore[arg-type]
    assert len(seen) == 4  # the first chunk was committed, the other four wait for the next flush
    assert await seen.flush(db) == 4 and len(seen) == 0


async def test_a_chunk_holds_the_write_queue_for_its_own_work_only(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy event loop (a task that keeps it 100 ms per turn) does not lengthen how long a
    chunk holds SQLite's write queue: the chunk never waits for a turn of the loop while it holds
    it (it did at its statement and its commit: 765 ms held once for 500 rows at load ~6)."""
    if not db.is_sqlite:
        pytest.skip("SQLite's write queue")
    ids = await _devices(db, 1000)
    held = record_holds(monkeypatch)
    seen = LastSeen()
    for device_id in ids:
        seen.touch(device_id)
    async with busy_loop():
        assert await seen.flush(db) == 1000
    assert len(held) == -(-1000 // LastSeen.CHUNK)
    assert max(held) < 0.1, held  # none waited for the hog's turn while holding the queue
