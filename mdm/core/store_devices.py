"""Every SQL statement about devices, administration groups and users (``mdm.core.devices``,
``mdm.core.groups``, ``mdm.core.users``, bulk targeting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Group, User

_S = TypeVar("_S", bound="Select[*tuple[Any, ...]]")

# ---- devices ------------------------------------------------------------------------------------


async def device(session: AsyncSession, device_id: int) -> Device | None:
    return await session.get(Device, device_id)


async def delete_device(session: AsyncSession, row: Device) -> None:
    await session.delete(row)


async def user_name(session: AsyncSession, user_id: int) -> str | None:
    return await session.scalar(select(User.name).where(User.id == user_id))


def _filtered(
    stmt: _S,
    *,
    protocol: int | None,
    status: str | None,
    user: str | None,
    group_ids: Sequence[int] | None,
    q: str | None,
) -> _S:
    """``stmt`` (over ``devices``) with the list filters; the owner by name through a scalar
    subquery (one index look-up, no join)."""
    if protocol is not None:
        stmt = stmt.where(Device.protocol == protocol)
    if status is not None:
        stmt = stmt.where(Device.status == status)
    if user is not None:
        stmt = stmt.where(Device.user_id == select(User.id).where(User.name == user).scalar_subquery())
    if group_ids is not None:
        stmt = stmt.where(Device.group_id.in_(group_ids))
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        stmt = stmt.where(
            or_(
                Device.name.ilike(like, escape="\\"),
                Device.serial_number.ilike(like, escape="\\"),
                Device.identifier.ilike(like, escape="\\"),
            )
        )
    return stmt


async def device_page(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int | None = None,
    protocol: int | None = None,
    status: str | None = None,
    user: str | None = None,
    group_ids: Sequence[int] | None = None,
    q: str | None = None,
) -> list[tuple[Device, str | None]]:
    """Up to ``limit`` devices ordered by id, each with its owner's name."""
    stmt = select(Device, User.name).outerjoin(User, User.id == Device.user_id).order_by(Device.id)
    if after_id is not None:
        stmt = stmt.where(Device.id > after_id)
    stmt = _filtered(stmt, protocol=protocol, status=status, user=user, group_ids=group_ids, q=q)
    return [(r[0], r[1]) for r in (await session.execute(stmt.limit(limit))).all()]


async def count_devices(
    session: AsyncSession,
    *,
    protocol: int | None = None,
    status: str | None = None,
    user: str | None = None,
    group_ids: Sequence[int] | None = None,
    q: str | None = None,
) -> int:
    """How many devices the filters of ``device_page`` match (every page together)."""
    stmt = _filtered(
        select(func.count()).select_from(Device),
        protocol=protocol,
        status=status,
        user=user,
        group_ids=group_ids,
        q=q,
    )
    return int((await session.execute(stmt)).scalar_one())


async def devices_by_id(session: AsyncSession, device_ids: Sequence[int]) -> list[Device]:
    stmt = select(Device).where(Device.id.in_(device_ids)).order_by(Device.id)
    return list((await session.scalars(stmt)).all())


async def devices_by_state(session: AsyncSession) -> list[tuple[int, str, int]]:
    """(protocol, status, count) of every device state present."""
    state = (Device.protocol, Device.status)
    rows = (await session.execute(select(*state, func.count()).group_by(*state))).all()
    return [(r[0], r[1], r[2]) for r in rows]


# ---- groups -------------------------------------------------------------------------------------


async def group(session: AsyncSession, group_id: int) -> Group | None:
    return await session.get(Group, group_id)


async def group_links(session: AsyncSession) -> Sequence[Row[int, int | None]]:
    """(id, parent_id) of every group (groups are few)."""
    return (await session.execute(select(Group.id, Group.parent_id))).all()


async def lock_group_tree(session: AsyncSession) -> Sequence[Row[int, int | None, str]]:
    """(id, parent_id, name) of every group, each row locked (PostgreSQL) for the transaction."""
    stmt = select(Group.id, Group.parent_id, Group.name).order_by(Group.id).with_for_update()
    return (await session.execute(stmt)).all()


async def groups(session: AsyncSession) -> list[Group]:
    return list((await session.scalars(select(Group).order_by(Group.id))).all())


async def group_named(session: AsyncSession, name: str, parent_id: int | None) -> int | None:
    return await session.scalar(
        select(Group.id).where(
            Group.name == name,
            Group.parent_id.is_(None) if parent_id is None else Group.parent_id == parent_id,
        )
    )


async def add_group(session: AsyncSession, name: str, parent_id: int | None) -> Group:
    row = Group(name=name, parent_id=parent_id)
    session.add(row)
    await session.flush()
    return row


async def has_subgroup(session: AsyncSession, group_id: int) -> bool:
    return await session.scalar(select(Group.id).where(Group.parent_id == group_id).limit(1)) is not None


async def has_device(session: AsyncSession, group_id: int) -> bool:
    return await session.scalar(select(Device.id).where(Device.group_id == group_id).limit(1)) is not None


async def delete_group(session: AsyncSession, row: Group) -> None:
    await session.delete(row)


# ---- users --------------------------------------------------------------------------------------


async def user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def user_page(
    session: AsyncSession, *, limit: int, after_id: int | None, name: str | None
) -> list[User]:
    stmt = select(User).order_by(User.id)
    if after_id is not None:
        stmt = stmt.where(User.id > after_id)
    if name is not None:
        stmt = stmt.where(User.name == name)
    return list((await session.scalars(stmt.limit(limit))).all())


async def user_exists(session: AsyncSession, name: str) -> bool:
    return await session.scalar(select(User.id).where(User.name == name)) is not None


async def add_user(session: AsyncSession, name: str, email: str | None, display_name: str | None) -> User:
    row = User(name=name, email=email, display_name=display_name)
    session.add(row)
    await session.flush()
    return row


async def delete_user(session: AsyncSession, row: User) -> None:
    await session.delete(row)
