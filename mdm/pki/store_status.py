"""The certificates light's statement: issued certificates about to expire, counted up to a
bound along ``ix_certificates_status_not_after``."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.store_status import count_upto
from mdm.pki.tables import CertificateRequestRecord, CertStatus, IssuedCertificateRecord, RequestStatus

_certs = cast(Table, IssuedCertificateRecord.__table__)
_requests = cast(Table, CertificateRequestRecord.__table__)


async def valid_expiring_upto(session: AsyncSession, now: datetime, before: datetime, limit: int) -> int:
    """Valid certificates whose ``not_after`` falls in [now, before), counted up to ``limit``."""
    query = select(_certs.c.id).where(
        _certs.c.status == CertStatus.VALID.value, _certs.c.not_after >= now, _certs.c.not_after < before
    )
    return await count_upto(session, query, limit)


async def pending_requests_upto(session: AsyncSession, created_before: datetime, limit: int) -> int:
    """Requests an enterprise CA has held pending since before ``created_before``, up to ``limit``."""
    query = select(_requests.c.id).where(
        _requests.c.status == RequestStatus.PENDING.value, _requests.c.created_at < created_before
    )
    return await count_upto(session, query, limit)
