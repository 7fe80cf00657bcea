"""The SQL of ActiveSync mailbox policy management (``service_policies``) on ``eas_policies``."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import utcnow
from mdm.eas.records import MailboxPolicy
from mdm.eas.tables import EasPolicy


async def list_all(session: AsyncSession, *, include_vanished: bool = False) -> list[EasPolicy]:
    stmt = select(EasPolicy).order_by(EasPolicy.name)
    if not include_vanished:
        stmt = stmt.where(EasPolicy.vanished_at.is_(None))
    return list((await session.scalars(stmt)).all())


async def by_name(session: AsyncSession, name: str) -> EasPolicy | None:
    return await session.scalar(select(EasPolicy).where(EasPolicy.name == name))


async def upsert(session: AsyncSession, policy: MailboxPolicy) -> EasPolicy:
    """Store the policy as Exchange showed it (by name; a vanished row comes back)."""
    now = utcnow()
    row = await session.scalar(select(EasPolicy).where(EasPolicy.name == policy.name).with_for_update())
    if row is None:
        row = EasPolicy(name=policy.name, identity=policy.identity, seen_at=now)
        session.add(row)
    row.identity = policy.identity
    row.guid = policy.guid
    row.is_default = policy.is_default
    row.settings = policy.settings.model_dump(mode="json")
    row.seen_at = row.updated_at = now
    row.vanished_at = None
    await session.flush()
    return row


async def remove(session: AsyncSession, name: str) -> None:
    await session.execute(delete(EasPolicy).where(EasPolicy.name == name))
