"""The SQL of the outbox's delivery (``mdm.reporting``): read undelivered events in id order, mark
a sent batch delivered, count refusals and dead-letter, sweep old events, prune delivered ones,
list and replay dead letters, and the device records sent with the events.

Core statements only (no ORM objects: the worker reads and marks tens of thousands of rows a
second). Every statement is bounded: a LIMIT, or a list of ids the caller read with one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Event, Protocol, User

_events = cast(Table, Event.__table__)
_devices = cast(Table, Device.__table__)
_users = cast(Table, User.__table__)
e = _events.c

# Undelivered and not dead: the predicate of the partial index ``ix_events_undelivered``.
PENDING = (e.delivered_at.is_(None)) & (e.dead_at.is_(None))
_BATCH = (
    select(e.id, e.uuid, e.type, e.severity, e.created_at, e.body, e.device_id, e.user_id)
    .where(PENDING, e.id > bindparam("after"))
    .order_by(e.id)
    .limit(bindparam("n"))
)
_MARK = (
    update(_events)
    .where(e.id.in_(bindparam("ids", expanding=True)), e.delivered_at.is_(None))
    .values(delivered_at=bindparam("now"))
)
_PROTOCOLS = {p.value: p.name.lower() for p in Protocol}
MAX_ERROR = 255


@dataclass(frozen=True, slots=True)
class PendingEvent:
    id: int
    uuid: str
    type: str
    severity: str
    created_at: datetime
    body: dict[str, Any]
    device_id: int | None
    user_id: int | None


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: int
    protocol: str
    status: str
    name: str | None
    model: str | None
    os_version: str | None
    serial_number: str | None
    udid: str | None
    user: str | None
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeadEvent:
    id: int
    uuid: str
    type: str
    severity: str
    device_id: int | None
    created_at: datetime
    dead_at: datetime
    refusals: int
    last_error: str | None


async def pending(session: AsyncSession, limit: int, after_id: int = 0) -> list[PendingEvent]:
    """Up to ``limit`` undelivered, not dead events after ``after_id``, in id order."""
    rows = await session.execute(_BATCH, {"after": after_id, "n": limit})
    return [PendingEvent(*row) for row in rows]


async def mark_delivered(session: AsyncSession, ids: Sequence[int], now: datetime) -> int:
    """Mark exactly these events delivered (one statement); answers how many were marked."""
    if not ids:
        return 0
    result = await session.execute(_MARK, {"ids": list(ids), "now": now})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def refuse(
    session: AsyncSession, ids: Sequence[int], error: str, dead_after: int, now: datetime
) -> int:
    """Count one refusal on each of ``ids``; those that reach ``dead_after`` refusals are
    dead-lettered. Answers how many became dead."""
    if not ids:
        return 0
    await session.execute(
        update(_events)
        .where(e.id.in_(ids), PENDING)
        .values(
            delivery_attempts=e.delivery_attempts + 1,
            last_error=error[:MAX_ERROR],
            dead_at=case((e.delivery_attempts + 1 >= dead_after, literal(now, e.dead_at.type)), else_=None),
        )
    )
    dead = await session.scalar(
        select(func.count()).select_from(_events).where(e.id.in_(ids), e.dead_at.is_not(None))
    )
    return int(dead or 0)


async def dead_letter_older(
    session: AsyncSession, cutoff: datetime, limit: int, error: str, now: datetime
) -> int:
    """Dead-letter those of the first ``limit`` undelivered events (in id order: the oldest lead
    the undelivered index) that were created before ``cutoff``. Bounded: a backlog of young events
    is not scanned for old ones. Answers how many."""
    head = select(e.id, e.created_at).where(PENDING).order_by(e.id).limit(limit).subquery()
    ids = list(await session.scalars(select(head.c.id).where(head.c.created_at < cutoff)))
    if not ids:
        return 0
    await session.execute(
        update(_events).where(e.id.in_(ids), PENDING).values(dead_at=now, last_error=error[:MAX_ERROR])
    )
    return len(ids)


async def prune_delivered(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` events delivered before ``cutoff``. Answers how many."""
    ids = list(
        await session.scalars(
            select(e.id).where(e.delivered_at.is_not(None), e.delivered_at < cutoff).limit(limit)
        )
    )
    if not ids:
        return 0
    await session.execute(delete(_events).where(e.id.in_(ids)))
    return len(ids)


async def backlog(session: AsyncSession, cap: int) -> tuple[int, datetime | None]:
    """(undelivered events, counted up to ``cap``; the oldest one's creation time)."""
    inner = select(e.id).where(PENDING).limit(cap).subquery()
    count = await session.scalar(select(func.count()).select_from(inner))
    oldest = await session.scalar(select(e.created_at).where(PENDING).order_by(e.id).limit(1))
    return int(count or 0), oldest


async def dead_count(session: AsyncSession, cap: int) -> int:
    """Dead letters, counted up to ``cap`` (over the partial index ``ix_events_dead``)."""
    inner = select(e.id).where(e.dead_at.is_not(None)).limit(cap).subquery()
    return int(await session.scalar(select(func.count()).select_from(inner)) or 0)


async def dead_page(
    session: AsyncSession, *, limit: int, after_id: int = 0, type_: str | None = None,
    device_id: int | None = None,
) -> list[DeadEvent]:
    """Up to ``limit`` dead letters after ``after_id``, oldest id first."""
    stmt = (
        select(e.id, e.uuid, e.type, e.severity, e.device_id, e.created_at, e.dead_at, e.delivery_attempts,
               e.last_error)
        .where(e.dead_at.is_not(None), e.id > after_id)
        .order_by(e.id)
        .limit(limit)
    )  # fmt: skip
    if type_:
        stmt = stmt.where(e.type == type_)
    if device_id:
        stmt = stmt.where(e.device_id == device_id)
    return [DeadEvent(*row) for row in await session.execute(stmt)]


async def dead_ids(session: AsyncSession, *, after_id: int, limit: int) -> list[int]:
    """The ids of up to ``limit`` dead letters after ``after_id`` (a chunk of "replay all")."""
    stmt = select(e.id).where(e.dead_at.is_not(None), e.id > after_id).order_by(e.id).limit(limit)
    return list(await session.scalars(stmt))


async def requeue(session: AsyncSession, ids: Sequence[int]) -> int:
    """Put these dead letters back in the outbox (refusals reset). Answers how many were dead."""
    if not ids:
        return 0
    result = await session.execute(
        update(_events)
        .where(e.id.in_(list(ids)), e.dead_at.is_not(None))
        .values(dead_at=None, delivery_attempts=0, last_error=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def device_records(session: AsyncSession, ids: Sequence[int]) -> list[DeviceRow]:
    """What the core server keeps of these devices (one statement for a batch's devices)."""
    if not ids:
        return []
    d = _devices.c
    stmt = (
        select(d.id, d.protocol, d.status, d.name, d.model, d.os_version, d.serial_number, d.identifier,
               _users.c.name, d.last_seen_at)
        .select_from(_devices.outerjoin(_users, _users.c.id == d.user_id))
        .where(d.id.in_(list(ids)))
    )  # fmt: skip
    return [
        DeviceRow(r[0], _PROTOCOLS.get(r[1], str(r[1])), r[2], r[3], r[4], r[5], r[6],
                  r[7] if r[1] == Protocol.IOS.value else None, r[8], r[9])
        for r in await session.execute(stmt)
    ]  # fmt: skip


async def max_id_below(session: AsyncSession, event_id: int) -> int:
    """The highest visible event id below ``event_id`` (0: none)."""
    return int(await session.scalar(select(func.max(e.id)).where(e.id < event_id)) or 0)


async def count_between(session: AsyncSession, low: int, high: int) -> int:
    """Visible events (any state) with ``low < id < high``: fewer than ``high - low - 1`` means
    ids in between are not visible (rolled back, or still being written by an open transaction)."""
    stmt = select(func.count()).select_from(_events).where(e.id > low, e.id < high)
    return int(await session.scalar(stmt) or 0)
