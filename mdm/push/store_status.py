"""The push light's statement: the earliest due wake-up, the first entry of ``ix_push_wakeups_due_at``
(rows being sent are leased into the future, so an old due time is a wake-up nobody sent)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.push.tables import PushWakeup

_w = cast(Table, PushWakeup.__table__)


async def earliest_due(session: AsyncSession) -> datetime | None:
    return cast("datetime | None", await session.scalar(select(_w.c.due_at).order_by(_w.c.due_at).limit(1)))
