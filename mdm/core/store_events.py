"""The event outbox: the write ``mdm.core.events.emit`` makes in the caller's transaction, and the
reads of the admin API and the metrics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Event
from mdm.db.prepared import Prepared

_INSERT = insert(cast(Table, Event.__table__))
# The columns of an outbox row as ``mdm.core.events.event_values`` makes it.
EVENT_COLUMNS = (
    "uuid", "type", "severity", "device_id", "user_id", "body", "created_at", "delivery_attempts"
)
_INSERT_ROW = Prepared(_INSERT, EVENT_COLUMNS)
_ROW_KEYS = frozenset(EVENT_COLUMNS)


def add_event(session: AsyncSession, event: Event) -> None:
    session.add(event)


async def flush_pending(session: AsyncSession) -> None:
    """Write the objects the session holds before a Core write that must come after them."""
    if session.new or session.dirty or session.deleted:
        await session.flush()


async def insert_event(session: AsyncSession, values: dict[str, Any]) -> None:
    """One event row, written now (Core), after whatever the session still holds."""
    await flush_pending(session)
    if values.keys() == _ROW_KEYS:
        await _INSERT_ROW.execute(session, values)  # the hot paths' rows (``event_values``)
    else:
        await session.execute(_INSERT, values)


async def event_page(
    session: AsyncSession,
    *,
    limit: int,
    before_id: int | None = None,
    after_id: int | None = None,
    type_: str | None = None,
    severity: str | None = None,
    severities: Sequence[str] | None = None,
    device_id: int | None = None,
    since: datetime | None = None,
) -> list[Event]:
    """Up to ``limit`` events, newest first."""
    stmt = select(Event).order_by(Event.id.desc())
    if before_id is not None:
        stmt = stmt.where(Event.id < before_id)
    if after_id is not None:
        stmt = stmt.where(Event.id > after_id)
    if type_:
        stmt = stmt.where(Event.type == type_)
    if severity:
        stmt = stmt.where(Event.severity == severity)
    if severities is not None:
        stmt = stmt.where(Event.severity.in_(severities))
    if device_id:
        stmt = stmt.where(Event.device_id == device_id)
    if since:
        stmt = stmt.where(Event.created_at >= since)
    return list((await session.scalars(stmt.limit(limit))).all())


async def undelivered_count(session: AsyncSession) -> int:
    """Events waiting for delivery (dead letters are not), counted on the backlog's partial index."""
    waiting = (Event.delivered_at.is_(None), Event.dead_at.is_(None))
    stmt = select(func.count()).select_from(Event).where(*waiting)
    return int(await session.scalar(stmt) or 0)
