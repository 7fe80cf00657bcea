"""The look-ups of Kerberos-authenticated requests (``mdm.server.kcd``): a user by name and the
owner of a device. Reads only: an unauthenticated request never writes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, User


async def user_id_by_name(session: AsyncSession, name: str) -> int | None:
    return await session.scalar(select(User.id).where(User.name == name))


async def device_owner(session: AsyncSession, device_id: int) -> int | None:
    return await session.scalar(select(Device.user_id).where(Device.id == device_id))
