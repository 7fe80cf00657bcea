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
    async def transaction(self) -> AsyncIterator[Any]:
        self.transactions += 1
        if self.transactions == self.fail_at:
            raise ConnectionError("database went away")
        async with self.db.transaction() as session:
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
