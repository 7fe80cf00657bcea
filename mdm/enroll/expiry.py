"""Expiry of unused one-time links: on the way (a link found past its expiry) and by the worker."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.db.models import utcnow
from mdm.enroll import store
from mdm.enroll.event_types import ENROLLMENT_EXPIRED

BATCH = 500


async def expire(session: AsyncSession, enrollment_id: int, now: datetime) -> bool:
    """Mark one pending link past its expiry as expired, with its event; False if it was not."""
    row = await store.mark_expired(session, enrollment_id, now)
    if row is None:
        return False
    events.emit(session, ENROLLMENT_EXPIRED, user_id=row.user_id, enrollment_id=row.id,
                expires_at=row.expires_at.isoformat())
    return True


async def expire_due(session: AsyncSession, now: datetime | None = None, limit: int = BATCH) -> int:
    """Mark pending links past their expiry as expired (one event each); returns how many."""
    now = now or utcnow()
    count = 0
    for enrollment_id in await store.due_for_expiry(session, now, limit):
        count += await expire(session, enrollment_id, now)
    return count
