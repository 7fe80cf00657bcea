"""The look-up of the web listener's Kerberos gate: whose a one-time link is."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.enroll.tables import Enrollment


async def link_owner(session: AsyncSession, token_hash: bytes) -> tuple[int, int] | None:
    """(enrollment id, user id) of the link, whatever its status; None when there is none."""
    found = (
        await session.execute(
            select(Enrollment.id, Enrollment.user_id).where(Enrollment.token_hash == token_hash)
        )
    ).first()
    return None if found is None else (int(found.id), int(found.user_id))
