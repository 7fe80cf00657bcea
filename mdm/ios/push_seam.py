"""Where the iOS command channel asks for a delayed wake-up push (NotNow back-off).

A NotNow is answered with a back-off of at least one second (``ios.notnow_backoff_seconds``), so
a wake-up is never due at once. ``schedule_push`` writes (or moves earlier) one durable
``ios_push_requests`` row per device in the caller's transaction (a rollback takes it back); after
the commit the channel also calls ``ServerContext.pushers.wake_at`` with the due time. The APNs
pusher (push issue) may schedule from that call and drains due rows with ``take_due`` (select,
delete) after a restart or on another replica. Without a pusher nothing is lost: the deferred
command is offered again at the device's next Idle poll. Nothing here talks to APNs; the SQL is
in ``store.py``.
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

