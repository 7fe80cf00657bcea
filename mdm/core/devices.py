"""Device queries and administration shared by the API and protocol handlers."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import NotFound
from mdm.db.models import Command, Device, Group, Protocol, Severity, User


async def get(session: AsyncSession, device_id: int) -> Device:
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    return device


async def owner_name(session: AsyncSession, device: Device) -> str | None:
    if device.user_id is None:
        return None
    return await session.scalar(select(User.name).where(User.id == device.user_id))


async def group_and_descendants(session: AsyncSession, group_id: int) -> list[int]:
    """The group and every group nested below it (groups are few; walk them in memory)."""
    rows = (await session.execute(select(Group.id, Group.parent_id))).all()
    if group_id not in {r.id for r in rows}:
        raise NotFound(f"no group {group_id}")
    children: dict[int | None, list[int]] = {}
    for r in rows:
        children.setdefault(r.parent_id, []).append(r.id)
    out, stack = [], [group_id]
    while stack:
        gid = stack.pop()
        out.append(gid)
        stack.extend(children.get(gid, []))
    return out


async def list_devices(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int | None = None,
    protocol: str | None = None,
    status: str | None = None,
    user: str | None = None,
    group: int | None = None,
    q: str | None = None,
) -> tuple[list[tuple[Device, str | None]], int | None]:
    """A page ordered by id, and the cursor of the next page (None when this is the last)."""
    stmt = select(Device, User.name).outerjoin(User, User.id == Device.user_id).order_by(Device.id)
    if after_id is not None:
        stmt = stmt.where(Device.id > after_id)
    if protocol is not None:
        stmt = stmt.where(Device.protocol == Protocol[protocol.upper()].value)
    if status is not None:
        stmt = stmt.where(Device.status == status)
    if user is not None:
        stmt = stmt.where(User.name == user)
    if group is not None:
        stmt = stmt.where(Device.group_id.in_(await group_and_descendants(session, group)))
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
    rows: list[tuple[Device, str | None]] = [
        (r[0], r[1]) for r in (await session.execute(stmt.limit(limit + 1))).all()
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1][0].id if more and rows else None)


async def active_command_count(session: AsyncSession, device_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Command)
            .where(Command.device_id == device_id, Command.active.is_(True))
        )
        or 0
    )


async def delete(session: AsyncSession, device_id: int, *, by: str | None = None) -> Device:
    """Forget a device (its commands go with it); the event keeps the facts. Its certificate stops
    identifying it at commit, on every replica (the iOS binding cache watches device deletes:
    ``mdm/ios/state.py``), and its id is never handed out again (``NEVER_REUSED``)."""
    device = await get(session, device_id)
    events.emit(
        session,
        "device_deleted",
        Severity.WARNING,
        device_id=device.id,
        identifier=device.identifier,
        protocol=Protocol(device.protocol).name.lower(),
        by=by,
    )
    await session.delete(device)
    return device
