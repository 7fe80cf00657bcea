"""Every SQL statement of ``mdm bench outbox``'s preparation and checks: the devices the events
are about, the outbox rows written in chunks as Core executemany statements, and the bounded
reads and resets a re-run needs (by id ranges, never one statement over the whole table)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Event

_d = cast(Table, Device.__table__)
_e = cast(Table, Event.__table__)


async def device_ids(session: AsyncSession, first: str, last: str, protocol: int) -> list[int]:
    """The ids of the bench devices (identifiers in [first, last]), in identifier order."""
    rows = await session.execute(
        select(_d.c.id)
        .where(_d.c.protocol == protocol, _d.c.identifier >= first, _d.c.identifier <= last)
        .order_by(_d.c.identifier)
    )
    return [int(r.id) for r in rows]


async def insert_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(_d), list(rows))


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(_e), list(rows))


async def id_bounds(session: AsyncSession) -> tuple[int, int, int]:
    """(count, min id, max id) of the whole outbox (min/max from the primary key)."""
    row = (await session.execute(select(func.count(), func.min(_e.c.id), func.max(_e.c.id)))).one()
    return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)


async def undelivered(session: AsyncSession) -> int:
    """Events neither delivered nor dead-lettered (the partial index of pending rows)."""
    query = select(func.count()).select_from(_e).where(_e.c.delivered_at.is_(None), _e.c.dead_at.is_(None))
    return int(await session.scalar(query) or 0)


async def dead(session: AsyncSession) -> int:
    """Dead-lettered events (indexed)."""
    query = select(func.count()).select_from(_e).where(_e.c.dead_at.is_not(None))
    return int(await session.scalar(query) or 0)


async def delete_range(session: AsyncSession, low: int, high: int) -> int:
    result = await session.execute(delete(_e).where(_e.c.id >= low, _e.c.id < high))
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_foreign(session: AsyncSession, low: int, high: int, *, first_device: int,
                         last_device: int) -> int:
    """Delete the events of [low, high) that are not about a bench device (the server's own)."""
    foreign = _e.c.device_id.is_(None) | (_e.c.device_id < first_device) | (_e.c.device_id > last_device)
    result = await session.execute(delete(_e).where(_e.c.id >= low, _e.c.id < high, foreign))
    return int(getattr(result, "rowcount", 0) or 0)


async def requeue_range(session: AsyncSession, low: int, high: int) -> int:
    """Make the events of [low, high) undelivered again (and not dead-lettered), as a fresh
    backlog for a new run against a new receiver."""
    values = {"delivered_at": None, "delivery_attempts": 0, "dead_at": None, "last_error": None}
    result = await session.execute(update(_e).where(_e.c.id >= low, _e.c.id < high).values(**values))
    return int(getattr(result, "rowcount", 0) or 0)


async def uuids_in_order(session: AsyncSession, after: int, limit: int) -> list[tuple[int, str, int | None]]:
    """(id, uuid, device_id) of up to ``limit`` events after id ``after``, in id order."""
    rows = await session.execute(
        select(_e.c.id, _e.c.uuid, _e.c.device_id).where(_e.c.id > after).order_by(_e.c.id).limit(limit)
    )
    return [(int(r.id), str(r.uuid), None if r.device_id is None else int(r.device_id)) for r in rows]
