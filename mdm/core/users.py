"""Users (device owners) as the admin API manages them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import store_devices as store
from mdm.core.errors import Conflict, NotFound
from mdm.db.models import User


async def page(
    session: AsyncSession, *, limit: int, after_id: int | None = None, name: str | None = None
) -> tuple[list[User], int | None]:
    """A page of users ordered by id, and the cursor of the next one (None when this is the last)."""
    rows = await store.user_page(session, limit=limit + 1, after_id=after_id, name=name)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


async def create(
    session: AsyncSession, name: str, *, email: str | None = None, display_name: str | None = None
) -> User:
    if await store.user_exists(session, name):
        raise Conflict(f"user {name!r} already exists")
    return await store.add_user(session, name, email, display_name)


async def get(session: AsyncSession, user_id: int) -> User:
    user = await store.user(session, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


async def delete(session: AsyncSession, user_id: int) -> None:
    """Delete a user; their devices keep no owner."""
    await store.delete_user(session, await get(session, user_id))
