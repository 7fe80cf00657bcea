"""The SQL of the core link's state row (``reporting_link``, ``id = 1``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.reporting.tables import ReportingLink

_link = cast(Table, ReportingLink.__table__)
ROW_ID = 1


@dataclass(frozen=True)
class LinkRow:
    up: bool
    since: datetime
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure_reason: str | None
    last_failure_detail: str | None
    consecutive_failures: int
    backlog: int
    oldest_undelivered_at: datetime | None
    dead_letters: int
    deliverer: str | None
    updated_at: datetime


_COLUMNS = [_link.c[name] for name in LinkRow.__dataclass_fields__]


async def read(session: AsyncSession) -> LinkRow | None:
    row = (await session.execute(select(*_COLUMNS).where(_link.c.id == ROW_ID))).first()
    return None if row is None else LinkRow(*row)


async def write(session: AsyncSession, state: LinkRow) -> None:
    """Replace the row (created by the first write: an UPDATE, then an INSERT if none)."""
    values = asdict(state)
    values["last_failure_reason"] = (state.last_failure_reason or None) and state.last_failure_reason[:64]
    values["last_failure_detail"] = (state.last_failure_detail or None) and state.last_failure_detail[:512]
    values["deliverer"] = state.deliverer and state.deliverer[:255]
    result = await session.execute(update(_link).where(_link.c.id == ROW_ID).values(**values))
    if not result.rowcount:  # type: ignore[attr-defined]
        session.add(ReportingLink(id=ROW_ID, **values))
        await session.flush()
