"""The last-seen write-behind: each device gets its own time, and PostgreSQL's updates of
``devices`` are HOT (heap-only: the new version on the old one's page, no entry in any of the
table's 11 indexes).

A row that moved to another page is a non-HOT update: ``last_seen_at`` is in no index, so an
update that stays on its page is always HOT. Neighbouring ids share a page; filled to 100 % a page
had room for about one new version (~16 iOS devices to a page): 63 of 6,000 HOT in session 15.
Revision 0021 keeps half of each page free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from mdm.core import store_last_seen
from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.ios.state import LastSeen

DEVICES = 480
# The width of a device of the fleet bench (~480 bytes a row): ~16 to a full page, ~8 at 50 %.
_INVENTORY: dict[str, Any] = {"device_info": {"refreshed_at": "2026-12-04T00:00:00+00:00", "pad": "x" * 300}}


async def _pages(db: Database) -> dict[int, int]:
    async with db.session() as session:
        rows = (await session.execute(text("SELECT id, (ctid::text::point)[0]::bigint FROM devices"))).all()
    return {int(device_id): int(page) for device_id, page in rows}


async def test_each_device_gets_its_own_time(db: Database) -> None:
    async with db.transaction() as session:
        rows = [Device(protocol=Protocol.IOS.value, identifier=f"udid-{i}") for i in range(5)]
        session.add_all(rows)
        await session.flush()
        ids = [d.id for d in rows]
    base = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    wanted = {device_id: base + timedelta(seconds=7 * n) for n, device_id in enumerate(ids[:4])}
    async with db.transaction() as session:
        await store_last_seen.write(session, sorted(wanted.items()))
    async with db.session() as session:
        result = await session.execute(select(Device.id, Device.last_seen_at))
        got = {row.id: row.last_seen_at for row in result}
    assert got == {**wanted, ids[4]: None}


async def test_a_storm_of_neighbours_is_written_with_hot_updates(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's heap pages")
    async with db.transaction() as session:
        session.add_all(
            Device(protocol=Protocol.IOS.value, identifier=f"udid-{i:05d}", name=f"iPhone {i}",
                   serial_number=f"SN{i:010d}", inventory=_INVENTORY)
            for i in range(DEVICES)
        )
    before = await _pages(db)
    assert len(before) / len(set(before.values())) >= 4  # the premise: neighbours share a page
    seen = LastSeen()
    for device_id in sorted(before):  # polls in id order: the worst case for one page
        seen.touch(device_id)
    assert await seen.flush(db) == DEVICES
    after = await _pages(db)
    moved = sum(1 for device_id, page in before.items() if after[device_id] != page)
    assert moved == 0, f"{moved} of {DEVICES} rows moved (non-HOT)"
    async with db.session() as session:
        stamps = await session.scalar(select(func.count()).where(Device.last_seen_at.is_not(None)))
    assert stamps == DEVICES
