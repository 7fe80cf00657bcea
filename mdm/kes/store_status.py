"""The Android light's statements: a bounded sample of KES devices along the primary key."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device
from mdm.kes.tables import KesDevice

_k = cast(Table, KesDevice.__table__)
_d = cast(Table, Device.__table__)


async def highest_id(session: AsyncSession) -> int | None:
    """The largest KES device id (the primary key's last entry)."""
    value = await session.scalar(select(func.max(_k.c.device_id)))
    return int(value) if value is not None else None


async def sync_sample(session: AsyncSession, start_id: int, limit: int) -> list[Any]:
    """Up to ``limit`` KES devices with a certificate from ``start_id`` on, by id, then from the
    first id (a wrap-around window): their last sync, interval, registration and device status."""
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
        inner = window.order_by(_k.c.device_id).limit(limit - len(rows)).subquery()
        result = await session.execute(
            select(inner, _d.c.status).join(_d, _d.c.id == inner.c.device_id)
        )
        rows.extend(result)
    return rows
