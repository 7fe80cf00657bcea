"""The event log as the admin API pages through it (newest first)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import store_events as store
from mdm.db.enums import Severity
from mdm.db.models import Event

SEVERITY_ORDER = [s.value for s in Severity]


def at_least(severity: str) -> list[str]:
    """This severity and every worse one (info < warning < functional_failure < critical)."""
    return SEVERITY_ORDER[SEVERITY_ORDER.index(severity):]


async def page(
    session: AsyncSession,
    *,
    limit: int,
    before_id: int | None = None,
    after_id: int | None = None,
    type_: str | None = None,
    severity: str | None = None,
    min_severity: str | None = None,
    device_id: int | None = None,
    since: datetime | None = None,
) -> tuple[Sequence[Event], int | None]:
    """A page of events and the cursor of the next one (None when this is the last)."""
    rows = await store.event_page(
        session,
        limit=limit + 1,
        before_id=before_id,
        after_id=after_id,
        type_=type_,
        severity=severity,
        severities=at_least(min_severity) if min_severity else None,
        device_id=device_id,
        since=since,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)
