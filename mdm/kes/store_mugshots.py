"""The SQL statements of mugshots (``kes_mugshots``) and of the agent state the admin API shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.kes.tables import KesMugshot

LIST_COLUMNS = (KesMugshot.id, KesMugshot.device_id, KesMugshot.command_guid, KesMugshot.content_type,
                KesMugshot.size, KesMugshot.taken_at, KesMugshot.received_at)


async def insert(
    session: AsyncSession, *, device_id: int, command_guid: str, content_type: str, data: bytes,
    taken_at: datetime | None,
) -> int:
    mugshot = KesMugshot(device_id=device_id, command_guid=command_guid, content_type=content_type,
                         size=len(data), data=data, taken_at=taken_at)
    session.add(mugshot)
    await session.flush()
    return mugshot.id


async def by_command(session: AsyncSession, command_guid: str) -> KesMugshot | None:
    mugshot: KesMugshot | None = await session.scalar(
        select(KesMugshot).where(KesMugshot.command_guid == command_guid)
    )
    return mugshot


async def page(session: AsyncSession, device_id: int, *, limit: int, before_id: int | None) -> list[Any]:
    """The device's mugshots without their pictures, newest first."""
    stmt = select(*LIST_COLUMNS).where(KesMugshot.device_id == device_id)
    if before_id is not None:
        stmt = stmt.where(KesMugshot.id < before_id)
    return list((await session.execute(stmt.order_by(KesMugshot.id.desc()).limit(limit))).all())


async def one(session: AsyncSession, device_id: int, mugshot_id: int) -> KesMugshot | None:
    mugshot: KesMugshot | None = await session.scalar(
        select(KesMugshot).where(KesMugshot.id == mugshot_id, KesMugshot.device_id == device_id)
    )
    return mugshot
