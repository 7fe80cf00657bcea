"""The Android light's statements: a bounded sample of KES devices along the primary key."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device
from mdm.kes.tables import KesDevice

_k = cast(Table, KesDevice.__table__)
_d = cast(Table, Device.__table__)


class SampledDevice(NamedTuple):
    device_id: int
    last_sync_at: datetime | None
    sync_interval: int | None
    bound_at: datetime | None
    registered_at: datetime
    status: str | None


async def highest_id(session: AsyncSession) -> int | None:
    """The largest KES device id (the primary key's last entry)."""
    value = await session.scalar(select(func.max(_k.c.device_id)))
    return int(value) if value is not None else None


async def sync_sample(session: AsyncSession, start_id: int, limit: int) -> list[SampledDevice]:
    """Up to ``limit`` KES devices with a certificate from ``start_id`` on, by id, then from the
    first id (a wrap-around window): their last sync, interval and registration, and the device's
    status (looked up by primary key: no join the planner could turn into a walk of ``devices``)."""
    rows: list[Any] = []
    for lower, upper in ((start_id, None), (None, start_id)):
        if len(rows) >= limit:
            break
        window = select(_k.c.device_id, _k.c.last_sync_at, _k.c.sync_interval, _k.c.bound_at,
                        _k.c.registered_at).where(_k.c.cert_fingerprint.is_not(None))
        if lower is not None:
            window = window.where(_k.c.device_id >= lower)
        if upper is not None:
            window = window.where(_k.c.device_id < upper)
        rows.extend(await session.execute(window.order_by(_k.c.device_id).limit(limit - len(rows))))
    if not rows:
        return []
    ids = [r.device_id for r in rows]
    found = await session.execute(select(_d.c.id, _d.c.status).where(_d.c.id.in_(ids)))
    status: dict[int, str] = {row.id: row.status for row in found}
    return [SampledDevice(r.device_id, r.last_sync_at, r.sync_interval, r.bound_at, r.registered_at,
                          status.get(r.device_id)) for r in rows]
