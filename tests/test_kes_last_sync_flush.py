"""The KES last-sync write-behind (``LastSync.flush`` -> ``store_sync.write_last_sync``) writes a
chunk of devices with one statement per table, ``devices`` before ``kes_devices``, and each device
gets its own time (not one time for all, not another device's)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, insert, select

from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.kes.sync_state import LastSync
from mdm.kes.tables import KesDevice

N = 60


async def _devices(db: Database, n: int) -> list[int]:
    async with db.transaction() as session:
        ids = list((await session.scalars(
            insert(Device).returning(Device.id),
            [{"protocol": int(Protocol.KES), "identifier": f"flush-{i}"} for i in range(n)],
        )).all())
        await session.execute(insert(KesDevice), [{"device_id": i} for i in ids])
    return ids


@contextmanager
def _updates(db: Database) -> Iterator[list[str]]:
    """The UPDATE statements sent to the database while inside (one entry per cursor call)."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            seen.append(statement.split()[1].strip('"') + (" (executemany)" if many else ""))

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)


async def test_the_flush_writes_a_chunk_in_one_statement_per_table(db: Database) -> None:
    ids = await _devices(db, N)
    base = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    expected = {device_id: base + timedelta(seconds=n, microseconds=n) for n, device_id in enumerate(ids)}
    last = LastSync()
    for device_id in reversed(ids):  # (arrival order is not id order)
        last._pending[device_id] = expected[device_id]
    with _updates(db) as updates:
        assert await last.flush(db) == N
    assert updates == ["devices", "kes_devices"]  # one statement each, devices first, no executemany
    async with db.session() as session:
        seen = {i: at for i, at in (await session.execute(select(Device.id, Device.last_seen_at))).all()}
        synced = {i: at for i, at in (await session.execute(
            select(KesDevice.device_id, KesDevice.last_sync_at))).all()}
    assert {i: seen[i] for i in ids} == expected
    assert {i: synced[i] for i in ids} == expected


async def test_a_flush_larger_than_a_chunk_is_one_pair_per_chunk(db: Database) -> None:
    ids = await _devices(db, LastSync.CHUNK + 5)
    at = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    last = LastSync()
    for device_id in ids:
        last._pending[device_id] = at
    with _updates(db) as updates:
        assert await last.flush(db) == len(ids)
    assert updates == ["devices", "kes_devices"] * 2
    async with db.session() as session:
        written = (await session.scalars(
            select(KesDevice.last_sync_at).where(KesDevice.device_id.in_(ids)))).all()
    assert set(written) == {at}
