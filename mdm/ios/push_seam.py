"""Where the iOS command channel asks for a wake-up push; the APNs worker (push issue) consumes it.

``schedule_push`` writes (or moves earlier) one ``ios_push_requests`` row per device in the
caller's transaction. The APNs worker is expected to select rows with ``due_at <= now``, push
``{"mdm": PushMagic}`` to the device's token and delete the row (``take_due`` does the select and
delete for it). Nothing here talks to APNs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import utcnow
from mdm.ios.tables import IosPushRequest


async def schedule_push(session: AsyncSession, device_id: int, delay: timedelta, reason: str) -> datetime:
    """Ask for a push to ``device_id`` after ``delay``; an earlier pending request wins."""
    due = utcnow() + delay
    existing = await session.get(IosPushRequest, device_id, with_for_update=True)
    if existing is None:
        session.add(IosPushRequest(device_id=device_id, due_at=due, reason=reason[:64]))
        return due
    if _aware(existing.due_at) > due:
        existing.due_at = due
        existing.reason = reason[:64]
    return _aware(existing.due_at)


async def take_due(session: AsyncSession, limit: int = 1000) -> list[IosPushRequest]:
    """Remove and return the requests that are due (for the APNs worker)."""
    rows = list(
        (
            await session.scalars(
                select(IosPushRequest)
                .where(IosPushRequest.due_at <= utcnow())
                .order_by(IosPushRequest.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )
    if rows:
        await session.execute(
            delete(IosPushRequest).where(IosPushRequest.device_id.in_([r.device_id for r in rows]))
        )
    return rows


def backoff(not_now_count: int, base: float, maximum: float) -> timedelta:
    """base * 2^(n-1), capped: 1st NotNow -> base, 2nd -> 2*base, ..."""
    exponent = max(0, min(not_now_count - 1, 30))
    return timedelta(seconds=min(base * (2**exponent), maximum))


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes for DateTime(timezone=True); they are stored as UTC.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
