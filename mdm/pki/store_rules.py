"""SQL of the issuance rules (``certificate_rules``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.pki.tables import IssuanceRuleRecord


async def get(session: AsyncSession, cert_type: str) -> IssuanceRuleRecord | None:
    return await session.get(IssuanceRuleRecord, cert_type)


async def all_rows(session: AsyncSession) -> list[IssuanceRuleRecord]:
    return list((await session.scalars(select(IssuanceRuleRecord))).all())


async def get_or_add(session: AsyncSession, cert_type: str) -> IssuanceRuleRecord:
    """The type's row, added to the session when the type has none yet (the caller fills it)."""
    row = await session.get(IssuanceRuleRecord, cert_type)
    if row is None:
        row = IssuanceRuleRecord(type=cert_type)
        session.add(row)
    return row
