"""KES last-sync write-behind: chunks hold SQLite's write queue for their own work only."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.kes.sync_state import LastSync
from tests.write_holds import busy_loop, record_holds


async def test_a_chunk_holds_the_write_queue_for_its_own_work_only(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the event loop kept busy 100 ms per turn, no chunk holds the queue across a turn."""
    async with db.transaction() as session:
        devices = [Device(protocol=Protocol.KES.value, identifier=f"kes-{i}") for i in range(450)]
        session.add_all(devices)
        await session.flush()
        ids = [d.id for d in devices]
    held = record_holds(monkeypatch)  # (SQLite's write queue; nothing recorded elsewhere)
    last = LastSync()
    for device_id in ids:
        last.touch(device_id)
    async with busy_loop():
        assert await last.flush(db) == 450
    async with db.session() as session:
        stamps = (await session.scalars(select(Device.last_seen_at).where(Device.id.in_(ids)))).all()
    assert len(stamps) == 450 and all(s is not None for s in stamps)
    if db.is_sqlite:
        assert len(held) == 3 and max(held) < 0.1, held
