"""Bearer-token authentication for the admin API, with a small TTL cache so that a busy
integration does not cost a database read per request."""

from __future__ import annotations

import hashlib

from aiohttp import web
from cachetools import TTLCache

from mdm.core import tokens
from mdm.core.errors import ServiceError
from mdm.core.tokens import Principal
from mdm.server.context import ctx_of

CACHE_TTL = 30.0
CACHE_SIZE = 1024


class Unauthenticated(ServiceError):
    status = 401
    code = "unauthenticated"


class TokenCache:
    """Principals by token digest for ``CACHE_TTL`` seconds after they were read, at most
    ``CACHE_SIZE`` of them (least recently used out first)."""

    def __init__(self) -> None:
        self._items: TTLCache[bytes, Principal] = TTLCache(maxsize=CACHE_SIZE, ttl=CACHE_TTL)

    def get(self, key: bytes) -> Principal | None:
        return self._items.get(key)

    def put(self, key: bytes, principal: Principal) -> None:
        self._items[key] = principal

    def clear(self) -> None:
        self._items.clear()


TOKEN_CACHE = web.AppKey("mdm_token_cache", TokenCache)


async def authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _challenge("missing bearer token (Authorization: Bearer TOKEN)")
    token = token.strip()
    key = hashlib.sha256(token.encode()).digest()
    cache = request.app[TOKEN_CACHE]
    principal = cache.get(key)
    if principal is None:
        async with ctx_of(request).db.transaction() as session:
            principal = await tokens.authenticate(session, token)
            if principal is not None:
                # Once per cache period, not per request: "last used" to within CACHE_TTL.
                await tokens.touch(session, principal.token_id)
        if principal is None:
            raise _challenge("invalid or revoked token")
        cache.put(key, principal)
    return principal


def _challenge(message: str) -> Unauthenticated:
    exc = Unauthenticated(message)
    return exc
