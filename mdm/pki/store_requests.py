"""Every SQL statement about ``certificate_requests`` (requests a certificate source holds
pending), as named functions on the caller's session."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.pki.tables import CertificateRequestRecord, RequestStatus

Row = CertificateRequestRecord
_table = cast(Table, Row.__table__)


async def add(session: AsyncSession, row: CertificateRequestRecord) -> CertificateRequestRecord:
    session.add(row)
    await session.flush()
    return row


async def get(session: AsyncSession, request_id: int) -> CertificateRequestRecord | None:
    return await session.get(Row, request_id)


async def get_for_update(session: AsyncSession, request_id: int) -> CertificateRequestRecord | None:
    """The row, locked on PostgreSQL until the transaction ends (SQLite has one writer)."""
    row: CertificateRequestRecord | None = await session.scalar(
        select(Row).where(Row.id == request_id).with_for_update()
    )
    return row


async def latest_for_purpose(session: AsyncSession, purpose: str) -> CertificateRequestRecord | None:
    """The newest request made for ``purpose`` (e.g. ``enrollment:42``), any status."""
    row: CertificateRequestRecord | None = await session.scalar(
        select(Row).where(Row.purpose == purpose).order_by(Row.id.desc()).limit(1)
    )
    return row


async def page(
    session: AsyncSession, *, limit: int, before_id: int | None, status: str | None
) -> list[CertificateRequestRecord]:
    """Newest first, ``limit + 1`` rows (the extra one says there is a next page)."""
    stmt = select(Row).order_by(Row.id.desc()).limit(limit + 1)
    if before_id is not None:
        stmt = stmt.where(Row.id < before_id)
    if status is not None:
        stmt = stmt.where(Row.status == status)
    return list((await session.scalars(stmt)).all())


async def due_ids(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Pending requests whose next poll is due, along ``ix_certificate_requests_status_next_poll_at``."""
    stmt = (
        select(_table.c.id)
        .where(_table.c.status == RequestStatus.PENDING.value, _table.c.next_poll_at <= now)
        .order_by(_table.c.next_poll_at)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def claim(session: AsyncSession, request_id: int, now: datetime, until: datetime) -> bool:
    """Move a due request's next poll to ``until``; False if another replica claimed it first
    (or it is no longer pending). The conditional UPDATE is the claim on both engines."""
    result = await session.execute(
        update(_table)
        .where(
            _table.c.id == request_id,
            _table.c.status == RequestStatus.PENDING.value,
            _table.c.next_poll_at <= now,
        )
        .values(next_poll_at=until)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
