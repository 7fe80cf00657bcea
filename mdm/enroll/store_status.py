"""The enrollment light's statements, each bounded: the newest enrollments by primary key, and
links by status counted up to a limit along ``ix_enrollments_status_expires``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.store_status import count_upto
from mdm.enroll.tables import Delivery, Enrollment

_e = cast(Table, Enrollment.__table__)


async def newest_mailed(session: AsyncSession, limit: int) -> list[Any]:
    """Of the ``limit`` newest enrollments, the links that were to be mailed (newest first):
    ``created_at`` and ``mailed_at`` (null: the mail was not sent)."""
    newest = select(_e.c.id, _e.c.email, _e.c.delivery, _e.c.created_at, _e.c.mailed_at).order_by(
        _e.c.id.desc()).limit(limit).subquery()
    rows = await session.execute(
        select(newest.c.created_at, newest.c.mailed_at)
        .where(newest.c.email.is_not(None), newest.c.delivery == Delivery.LINK.value)
        .order_by(newest.c.id.desc())
    )
    return list(rows)


async def by_status_expiring_since_upto(
    session: AsyncSession, status: str, since: datetime, limit: int
) -> int:
    """Enrollments in ``status`` whose link expires (or expired) at or after ``since``, up to ``limit``."""
    query = select(_e.c.id).where(_e.c.status == status, _e.c.expires_at >= since)
    return await count_upto(session, query, limit)
