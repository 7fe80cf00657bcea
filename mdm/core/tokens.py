"""Admin API tokens: ``mdm_<prefix>_<secret>``; only SHA-256 of the whole token is stored.

Lookup is by the public prefix (indexed), then a constant-time comparison of the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import store_tokens as store
from mdm.core.errors import Conflict, InvalidArgument, NotFound
from mdm.db.models import ApiToken, utcnow

# Scopes. "admin" implies every other one.
SCOPES = {
    "admin": "everything, including token management",
    "devices:read": "list and show devices, users, groups",
    "devices:write": "delete devices; manage users and groups",
    "devices:delete": "delete (unenroll and forget) devices",
    "commands:read": "read command logs",
    "commands:write": "send and recall commands",
    "events:read": "read events and status",
    "events:write": "replay dead-lettered events to the core server",
    "enroll": "create enrollments",
    "pki": "issue, revoke and replace certificates",
    "metrics:read": "read /metrics (Prometheus)",
    "core": "the core server: send and recall commands, create enrollments, remove devices, read "
    "devices, events and status",
}
# What a scope grants besides itself ("admin" grants everything).
IMPLIES: dict[str, frozenset[str]] = {
    "devices:write": frozenset({"devices:delete"}),
    "core": frozenset({
        "commands:read", "commands:write", "enroll", "devices:read", "devices:delete", "events:read",
    }),
}
PREFIX_LEN = 8
CHANGED_CHANNEL = store.CHANGED_CHANNEL


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return (
            "admin" in self.scopes
            or scope in self.scopes
            or any(scope in IMPLIES.get(held, ()) for held in self.scopes)
        )


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _split(token: str) -> str | None:
    parts = token.split("_")
    if len(parts) != 3 or parts[0] != "mdm" or len(parts[1]) != PREFIX_LEN:
        return None
    return parts[1]


def generate() -> str:
    return f"mdm_{secrets.token_hex(PREFIX_LEN // 2)}_{secrets.token_urlsafe(32)}"


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidArgument(
            f"unknown scope(s): {', '.join(unknown)}" if unknown else "at least one scope is required",
            allowed=sorted(SCOPES),
        )
    return sorted(set(scopes))


async def create(
    session: AsyncSession, name: str, scopes: list[str], token: str | None = None
) -> tuple[ApiToken, str]:
    """Store a new token (given or generated); returns the row and the clear token, shown once."""
    scopes = validate_scopes(scopes)
    if token is None:
        token = generate()
    prefix = _split(token)
    if prefix is None:
        if len(token) < 24:
            raise InvalidArgument("a token must be at least 24 characters long")
        prefix = token[:PREFIX_LEN]
    if await store.name_taken(session, name):
        raise Conflict(f"a token named {name!r} already exists")
    row = await store.add(session, name, prefix, _hash(token), " ".join(scopes))
    return row, token


async def authenticate(session: AsyncSession, token: str) -> Principal | None:
    prefix = _split(token) or token[:PREFIX_LEN]
    candidates = await store.live_with_prefix(session, prefix)
    digest = _hash(token)
    for row in candidates:
        if hmac.compare_digest(row.secret_hash, digest):
            return Principal(row.id, row.name, frozenset(row.scopes.split()))
    return None


async def touch(session: AsyncSession, token_id: int) -> None:
    row = await store.by_id(session, token_id)
    if row is not None:
        row.last_used_at = utcnow()


async def revoke(session: AsyncSession, name: str) -> ApiToken:
    row = await store.named(session, name)
    if row is None:
        raise NotFound(f"no token named {name!r}")
    row.revoked = True
    await store.notify_changed(session, row.id)
    return row


async def every(session: AsyncSession) -> list[ApiToken]:
    """Every token, oldest first (revoked ones too)."""
    return await store.every(session)


async def replace_or_keep(
    session: AsyncSession, name: str, scopes: list[str], token: str | None, *, force: bool
) -> str | None:
    """``mdm init``'s token: create it if missing; with ``force`` delete and create it again.
    Returns the clear token, or None when one exists and is kept."""
    existing = await store.named(session, name)
    if existing is not None and not force:
        return None
    if existing is not None:
        await store.notify_changed(session, existing.id)
        await store.delete(session, existing)
    _, secret = await create(session, name, scopes, token)
    return secret
