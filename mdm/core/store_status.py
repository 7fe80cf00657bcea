"""The statements of the traffic lights that read core tables, and the bounded count every
feature's light uses. None of them reads more than a bounded number of index entries: the lights
are polled by monitoring and must stay cheap at 10^6 devices (tests/test_status_plans.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import CommandQueueEntry, Device

_queue = cast(Table, CommandQueueEntry.__table__)
_devices = cast(Table, Device.__table__)


async def count_upto(session: AsyncSession, query: Select[Any], limit: int) -> int:
    """How many rows ``query`` selects, counted up to ``limit`` (the rest is never read)."""
    inner = query.limit(limit).subquery()
    return int(await session.scalar(select(func.count()).select_from(inner)) or 0)


async def oldest_queued(session: AsyncSession) -> datetime | None:
    """When the oldest command still in the queue was queued (the primary key's first entry:
    command ids grow with time)."""
    stmt = select(_queue.c.created_at).order_by(_queue.c.command_id).limit(1)
    return cast("datetime | None", await session.scalar(stmt))


async def queue_depth_upto(session: AsyncSession, limit: int) -> int:
    return await count_upto(session, select(_queue.c.command_id), limit)


async def any_device(session: AsyncSession) -> bool:
    return await session.scalar(select(_devices.c.id).limit(1)) is not None
