"""Every SQL statement of SCEP: one-time challenges and SCEP transactions (the approval queue),
as named functions on the caller's session. Certificates are read through ``mdm.pki.store``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import User
from mdm.scep.tables import ScepChallenge, ScepTransaction, TransactionStatus


# ---- challenges ---------------------------------------------------------------------------------
async def add_challenge(session: AsyncSession, challenge: ScepChallenge) -> None:
    session.add(challenge)
    await session.flush()


async def challenges_with_prefix(session: AsyncSession, prefix: str) -> list[ScepChallenge]:
    return list((await session.scalars(select(ScepChallenge).where(ScepChallenge.prefix == prefix))).all())


async def end_challenges(session: AsyncSession, purpose: str, now: datetime) -> int:
    """Make the unused challenges of ``purpose`` expire at ``now``; returns how many."""
    result = await session.execute(
        update(ScepChallenge)
        .where(
            ScepChallenge.purpose == purpose, ScepChallenge.used_at.is_(None), ScepChallenge.expires_at > now
        )
        .values(expires_at=now)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount


async def consume_challenge(session: AsyncSession, challenge_id: int, now: datetime) -> bool:
    """Mark the challenge used if it is unused and unexpired at ``now``; False if it was not."""
    result = await session.execute(
        update(ScepChallenge)
        .where(
            ScepChallenge.id == challenge_id, ScepChallenge.used_at.is_(None), ScepChallenge.expires_at > now
        )
        .values(used_at=now)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def delete_challenges_before(session: AsyncSession, cutoff: datetime) -> int:
    """Delete challenges that expired or were used before ``cutoff``; returns how many."""
    result = await session.execute(
        delete(ScepChallenge).where(or_(ScepChallenge.expires_at < cutoff, ScepChallenge.used_at < cutoff))
    )
    assert isinstance(result, CursorResult)
    return result.rowcount


# ---- transactions -------------------------------------------------------------------------------
async def transaction_by_id(session: AsyncSession, transaction_id: str) -> ScepTransaction | None:
    """The transaction of a client's transactionID."""
    stmt = select(ScepTransaction).where(ScepTransaction.transaction_id == transaction_id)
    row: ScepTransaction | None = await session.scalar(stmt)
    return row


async def add_transaction(session: AsyncSession, row: ScepTransaction) -> ScepTransaction:
    """Insert and flush (the id is set; a transactionID in use raises IntegrityError here)."""
    session.add(row)
    await session.flush()
    return row


async def list_transactions(
    session: AsyncSession, *, status: str | None, limit: int
) -> list[ScepTransaction]:
    """Newest first."""
    stmt = select(ScepTransaction).order_by(ScepTransaction.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(ScepTransaction.status == status)
    return list((await session.scalars(stmt)).all())


async def decide(
    session: AsyncSession, request_id: int, status: TransactionStatus, at: datetime, by: str
) -> tuple[bool, ScepTransaction | None]:
    """Set a PENDING request's decision. Returns whether it was pending (and is now decided) and
    the request as it now is (None: no such request)."""
    result = await session.execute(
        update(ScepTransaction)
        .where(ScepTransaction.id == request_id, ScepTransaction.status == TransactionStatus.PENDING.value)
        .values(status=status.value, decided_at=at, decided_by=by)
    )
    assert isinstance(result, CursorResult)
    row = await session.get(ScepTransaction, request_id, populate_existing=True)
    return result.rowcount == 1, row


# ---- users ----------------------------------------------------------------------------------------
async def user_id_by_name(session: AsyncSession, name: str) -> int | None:
    user_id: int | None = await session.scalar(select(User.id).where(User.name == name))
    return user_id
