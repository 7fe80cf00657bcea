"""Where the iOS command channel asks for a wake-up push; the APNs worker (push issue) consumes it.

``schedule_push`` writes (or moves earlier) one ``ios_push_requests`` row per device in the
caller's transaction. The APNs worker is expected to select rows with ``due_at <= now``, push
``{"mdm": PushMagic}`` to the device's token and delete the row (``take_due`` does the select and
delete for it). Nothing here talks to APNs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import utcnow
from mdm.ios import store
from mdm.ios.tables import IosPushRequest


async def schedule_push(session: AsyncSession, device_id: int, delay: timedelta, reason: str) -> datetime:
    """Ask for a push to ``device_id`` after ``delay``; an earlier pending request wins."""
    due = utcnow() + delay
    existing = await store.push_request(session, device_id)
    if existing is None:
        store.add_push_request(session, device_id, due, reason[:64])
        return due
    if existing.due_at > due:
        existing.due_at = due
        existing.reason = reason[:64]
    return existing.due_at


async def take_due(session: AsyncSession, limit: int = 1000) -> list[IosPushRequest]:
    """Remove and return the requests that are due (for the APNs worker)."""
    return await store.take_due_push_requests(session, limit)


def backoff(not_now_count: int, base: float, maximum: float) -> timedelta:
    """base * 2^(n-1), capped: 1st NotNow -> base, 2nd -> 2*base, ..."""
    exponent = max(0, min(not_now_count - 1, 30))
    return timedelta(seconds=min(base * (2**exponent), maximum))

