"""Every SQL statement about devices, administration groups and users (``mdm.core.devices``,
``mdm.core.groups``, ``mdm.core.users``, bulk targeting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, Select, column, func, literal, literal_column, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Group, User

_S = TypeVar("_S", bound="Select[*tuple[Any, ...]]")

# ---- devices ------------------------------------------------------------------------------------

# SQLite: the FTS5 trigram index of name, serial number and identifier (revision 0018), kept in
# step with ``devices`` by triggers. A trigram index answers substrings of 3 characters or more.
_SEARCH = table("devices_search", column("rowid"))
SEARCH_MIN_CHARS = 3


async def device(session: AsyncSession, device_id: int) -> Device | None:
    return await session.get(Device, device_id)


async def delete_device(session: AsyncSession, row: Device) -> None:
    await session.delete(row)


async def user_name(session: AsyncSession, user_id: int) -> str | None:
    return await session.scalar(select(User.name).where(User.id == user_id))


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


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
    subquery (one index look-up, no join). ``q`` is decided by ``_search`` on both engines, on
    SQLite after the candidates of ``_from_search``."""
    if protocol is not None:
        stmt = stmt.where(Device.protocol == protocol)
    if status is not None:
        stmt = stmt.where(Device.status == status)
    if user is not None:
        stmt = stmt.where(Device.user_id == select(User.id).where(User.name == user).scalar_subquery())
    if group_ids is not None:
        stmt = stmt.where(Device.group_id.in_(group_ids))
    if q:
        stmt = stmt.where(_search(q))
    return stmt


def _search(q: str) -> ColumnElement[bool]:
    """``q`` as a case-insensitive substring of name, serial number or identifier: the three
    ``ILIKE`` of the scan, which decide on both engines (PostgreSQL answers them from its trigram
    indexes, revision 0018)."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = f"%{escaped}%"
    return or_(
        Device.name.ilike(like, escape="\\"),
        Device.serial_number.ilike(like, escape="\\"),
        Device.identifier.ilike(like, escape="\\"),
    )


def _indexed(q: str | None, dialect: str) -> str | None:
    """SQLite, ``q`` of 3 characters or more: the FTS5 query of the candidates, else None (shorter
    queries scan): every trigram of ``q`` (the index keeps no positions), each one quoted with
    ``"`` doubled, so FTS5 operators, ``*`` and quotes in ``q`` are plain text. The candidates are
    a superset of the ``ILIKE`` matches (the index folds case by Unicode, ``ILIKE`` on SQLite folds
    ASCII only, and the trigrams may lie apart), which ``_search`` narrows to the devices the scan
    finds."""
    if not q or dialect != "sqlite" or len(q) < SEARCH_MIN_CHARS:
        return None
    trigrams = dict.fromkeys(q[i : i + SEARCH_MIN_CHARS] for i in range(len(q) - SEARCH_MIN_CHARS + 1))
    return " AND ".join('"' + t.replace('"', '""') + '"' for t in trigrams)


def _from_search(stmt: _S, phrase: str) -> _S:
    """``stmt`` reading the devices through the FTS5 index, in its rowid (= device id) order: a page
    reads candidates only until it is full."""
    match = literal_column("devices_search").op("MATCH")(literal(phrase))
    return stmt.select_from(_SEARCH).join(Device, Device.id == _SEARCH.c.rowid).where(match)


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
    stmt = select(Device, User.name)
    key: ColumnElement[int] = Device.id.expression
    phrase = _indexed(q, _dialect(session))
    if phrase is not None:
        stmt, key = _from_search(stmt, phrase), _SEARCH.c.rowid
    stmt = stmt.outerjoin(User, User.id == Device.user_id).order_by(key)
    if after_id is not None:
        stmt = stmt.where(key > after_id)
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
    cap: int | None = None,
) -> int:
    """How many devices the filters of ``device_page`` match (every page together); with ``cap``,
    counting stops at ``cap + 1`` (a common search term at 10^6 devices would count every match:
    ~1 s)."""
    phrase = _indexed(q, _dialect(session))
    stmt = select(func.count() if cap is None else literal(1))
    stmt = stmt.select_from(Device) if phrase is None else _from_search(stmt, phrase)
    stmt = _filtered(stmt, protocol=protocol, status=status, user=user, group_ids=group_ids, q=q)
    if cap is not None:
        stmt = select(func.count()).select_from(stmt.limit(cap + 1).subquery())
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
