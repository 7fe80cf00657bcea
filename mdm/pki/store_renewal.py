"""SQL of the renewal worker's sweeps: expired certificates, those due for a notice or a renewal
request, and the claim of one certificate (row locks, so several replicas can sweep at once)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.pki.tables import CertStatus, IssuedCertificateRecord

Record = IssuedCertificateRecord


_EXPIRING = (CertStatus.VALID.value, CertStatus.SUPERSEDED.value)


async def expired_ids(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Ids of valid or superseded certificates past their end (a read: claim them with
    ``claim_expired``, which checks again)."""
    stmt = (
        select(Record.id)
        .where(Record.status.in_(_EXPIRING), Record.not_after <= now)
        .order_by(Record.not_after)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def claim_expired(session: AsyncSession, now: datetime, ids: list[int]) -> list[Record]:
    """Those of ``ids`` still valid or superseded and past their end (checked again here: the ids
    were read outside this transaction), locked (skipping rows others hold)."""
    stmt = (
        select(Record)
        .where(Record.id.in_(ids), Record.status.in_(_EXPIRING), Record.not_after <= now)
        .order_by(Record.id)
        .with_for_update(skip_locked=True)
    )
    return list((await session.scalars(stmt)).all())


async def due_ids(
    session: AsyncSession,
    cert_type: str,
    now: datetime,
    window: timedelta,
    retry: timedelta,
    automatic: bool,
    limit: int,
) -> list[int]:
    """Ids of valid ``cert_type`` certificates ending within ``window`` that still need their
    notice or (``automatic``: device certificates) a renewal request, soonest first."""
    due = or_(
        Record.expiring_notified_at.is_(None),
        Record.renewal_requested_at.is_(None),
        Record.renewal_requested_at <= now - retry,
    ) if automatic else Record.expiring_notified_at.is_(None)
    stmt = select(Record.id).where(
        Record.status == CertStatus.VALID.value,
        Record.type == cert_type,
        Record.not_after > now,
        Record.not_after <= now + window,
        due,
    )
    if automatic:
        # Certificates without a device only need the notice.
        stmt = stmt.where(or_(Record.device_id.is_not(None), Record.expiring_notified_at.is_(None)))
    stmt = stmt.order_by(Record.not_after).limit(limit)
    return list((await session.scalars(stmt)).all())


async def claim_valid(session: AsyncSession, cert_id: int) -> IssuedCertificateRecord | None:
    """The certificate if it is still valid and no other sweep holds it."""
    record: IssuedCertificateRecord | None = await session.scalar(
        select(Record)
        .where(Record.id == cert_id, Record.status == CertStatus.VALID.value)
        .with_for_update(skip_locked=True)
    )
    return record
