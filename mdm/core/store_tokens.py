"""Every SQL statement about admin API tokens (``mdm.core.tokens``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.store_identity import NOTIFY_STMT
from mdm.db.models import ApiToken

# NOTIFY channel of a transaction that revokes or deletes a token (payload: its id).
CHANGED_CHANNEL = "mdm_api_tokens"


async def named(session: AsyncSession, name: str) -> ApiToken | None:
    return await session.scalar(select(ApiToken).where(ApiToken.name == name))


async def name_taken(session: AsyncSession, name: str) -> bool:
    return await session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None


async def add(session: AsyncSession, name: str, prefix: str, secret_hash: bytes, scopes: str) -> ApiToken:
    row = ApiToken(name=name, prefix=prefix, secret_hash=secret_hash, scopes=scopes)
    session.add(row)
    await session.flush()
    return row


async def live_with_prefix(session: AsyncSession, prefix: str) -> list[ApiToken]:
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.prefix == prefix, ApiToken.revoked.is_(False))
    )
    return list(rows)


async def by_id(session: AsyncSession, token_id: int) -> ApiToken | None:
    return await session.get(ApiToken, token_id)


async def every(session: AsyncSession) -> list[ApiToken]:
    return list((await session.scalars(select(ApiToken).order_by(ApiToken.id))).all())


async def delete(session: AsyncSession, row: ApiToken) -> None:
    await session.delete(row)
    await session.flush()


async def notify_changed(session: AsyncSession, token_id: int) -> None:
    """Tell the other replicas, at commit, that this token was revoked or deleted (PostgreSQL;
    SQLite is one process, whose cache the revoking request clears)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(NOTIFY_STMT, {"channel": CHANGED_CHANNEL, "payload": str(token_id)})
