"""SCEP challenge passwords: one-time dynamic challenges and the optional static one.

A dynamic challenge is 128 random bits (32 hex characters: PrintableString-safe, which matters
because clients put it into the CSR's challengePassword as a PrintableString). Only its SHA-256
is stored; lookup is by an 8-character prefix, then a constant-time comparison of the hashes.
Consumption is one conditional UPDATE, so of two concurrent uses exactly one succeeds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.errors import InvalidArgument, NotFound
from mdm.db.engine import Database
from mdm.scep import store
from mdm.scep.tables import ScepChallenge

PREFIX_LEN = 8
SECRET_HEX_LEN = 32
MAX_TTL_SECONDS = 90 * 86400
_SECRET_RE = re.compile(r"^[0-9a-f]{32}$")

# The purpose of the one-time enrollment token of an Android (KES) enrollment, followed by the
# enrollment's id (re-exported as ``mdm.enroll.seams.KES_TOKEN_PURPOSE``). Challenges made for an
# agent protocol are redeemed by that protocol only: SCEP refuses them, and administrators cannot
# make them through ``create_for``.
KES_TOKEN_PURPOSE = "kes-enrollment:"  # noqa: S105 - a purpose prefix, not a secret
AGENT_PREFIXES = (KES_TOKEN_PURPOSE,)


def for_agent(purpose: str) -> bool:
    """Whether a challenge of this purpose belongs to an agent protocol (not to SCEP)."""
    return purpose.startswith(AGENT_PREFIXES)


def _hash(challenge: str) -> bytes:
    return hashlib.sha256(challenge.encode()).digest()


async def create_challenge(
    session: AsyncSession, *, user_id: int | None, purpose: str, ttl_seconds: int,
    secret: str | None = None,
) -> str:
    """Create a one-time SCEP challenge in the caller's transaction and return it (shown once).

    ``purpose`` says what it was made for (e.g. ``"ios-enrollment:42"``), for audit; ``user_id``
    is the owner of the certificate issued with it. Valid for ``ttl_seconds`` (1 s - 90 days).
    ``secret``: the challenge itself when the caller derived it (32 lowercase hex characters, 128
    bits of a secret only the caller holds); by default 128 random bits.
    """
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidArgument(f"ttl_seconds must be between 1 and {MAX_TTL_SECONDS}")
    if not purpose or len(purpose) > 64:
        raise InvalidArgument("purpose must be 1-64 characters")
    if secret is None:
        secret = secrets.token_hex(SECRET_HEX_LEN // 2)
    elif not _SECRET_RE.match(secret):
        raise InvalidArgument("a challenge is 32 lowercase hex characters")
    now = datetime.now(UTC)
    await store.add_challenge(
        session,
        ScepChallenge(
            prefix=secret[:PREFIX_LEN],
            secret_hash=_hash(secret),
            purpose=purpose,
            user_id=user_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        ),
    )
    return secret


async def create_for(
    db: Database, *, user: str | None, purpose: str, ttl_seconds: int
) -> tuple[str, datetime]:
    """Create a one-time challenge for the user named ``user`` (None: no owner), in its own
    transaction; returns it (shown once) and when it expires. Agent purposes are reserved."""
    if for_agent(purpose):
        raise InvalidArgument(f"purpose {purpose!r} is reserved for enrollment tokens", field="purpose")
    async with db.transaction() as session:
        user_id = None
        if user is not None:
            user_id = await store.user_id_by_name(session, user)
            if user_id is None:
                raise NotFound(f"no user {user!r}")
        secret = await create_challenge(session, user_id=user_id, purpose=purpose, ttl_seconds=ttl_seconds)
    return secret, datetime.now(UTC) + timedelta(seconds=ttl_seconds)


@dataclass(frozen=True)
class ChallengeMatch:
    """Which challenge a password matched. ``id`` is None for the static challenge."""

    id: int | None
    user_id: int | None
    purpose: str
    problem: str | None  # "used" / "expired" for a dynamic challenge that can no longer be used


STATIC = ChallengeMatch(id=None, user_id=None, purpose="static", problem=None)


async def match(session: AsyncSession, challenge: str, static_secret: str = "") -> ChallengeMatch | None:
    """Find the challenge a password belongs to, without consuming it; None if unknown."""
    # Hashing first keeps the comparison constant-time in the length as well.
    if static_secret and hmac.compare_digest(_hash(challenge), _hash(static_secret)):
        return STATIC
    if len(challenge) != SECRET_HEX_LEN:
        return None
    digest = _hash(challenge)
    rows = await store.challenges_with_prefix(session, challenge[:PREFIX_LEN])
    found = None
    for row in rows:
        if hmac.compare_digest(row.secret_hash, digest):
            found = row
    if found is None:
        return None
    problem = None
    if found.used_at is not None:
        problem = "used"
    elif found.expires_at <= datetime.now(UTC):
        problem = "expired"
    return ChallengeMatch(found.id, found.user_id, found.purpose, problem)


async def consume(session: AsyncSession, challenge_id: int) -> bool:
    """Mark the challenge used if it still is usable; False if another request got there first."""
    return await store.consume_challenge(session, challenge_id, datetime.now(UTC))


async def withdraw(session: AsyncSession, purpose: str) -> int:
    """End the unused challenges made for ``purpose`` now (what they enrolled was revoked): they
    match as expired from then on. Returns how many."""
    return await store.end_challenges(session, purpose, datetime.now(UTC))


async def purge(session: AsyncSession, *, keep_days: int = 30) -> int:
    """Delete challenges used or expired more than ``keep_days`` ago; returns how many."""
    return await store.delete_challenges_before(session, datetime.now(UTC) - timedelta(days=keep_days))
