"""Bearer-token authentication for the admin API, with a small TTL cache so that a busy
integration does not cost a database read per request.

A revocation takes effect at once on every replica: the revoking replica clears its cache after
the commit, the others when they hear the revocation's NOTIFY (``tokens.CHANGED_CHANNEL``, a
worker of ``mdm.api.plugin``); a replica that cannot hear them (its listening connection is down)
caches nothing. A look-up that raced a revocation is not cached (``TokenCache.generation``). A
look-up reads in a read session: a wrong token never takes a write transaction (SQLite's single
writer); "last used" is written at most once per ``CACHE_TTL`` per token."""

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
    ``CACHE_SIZE`` of them (least recently used out first); nothing while not ``live``."""

    def __init__(self, *, live: bool = True) -> None:
        self._items: TTLCache[bytes, Principal] = TTLCache(maxsize=CACHE_SIZE, ttl=CACHE_TTL)
        self._touched: TTLCache[int, bool] = TTLCache(maxsize=CACHE_SIZE, ttl=CACHE_TTL)
        self.live = live
        # Bumped by every clear: a look-up that began before a revocation is not cached after it.
        self.generation = 0

    def get(self, key: bytes) -> Principal | None:
        return self._items.get(key)

    def put(self, key: bytes, principal: Principal, generation: int) -> None:
        """Cache what a look-up begun at ``generation`` read, unless a clear came in between."""
        if self.live and generation == self.generation:
            self._items[key] = principal

    def clear(self) -> None:
        self.generation += 1
        self._items.clear()

    def changed(self, _token_id: int) -> None:
        """A token was revoked or deleted (here or on another replica): nothing cached survives
        (entries are keyed by digest, not id; revocations are rare)."""
        self.clear()

    def set_live(self, live: bool) -> None:
        """Revocations are heard (``True``) or may be missed (``False``): start afresh either way."""
        self.live = live
        self.clear()

    def touch_due(self, token_id: int) -> bool:
        """True at most once per ``CACHE_TTL`` per token: time to write its "last used"."""
        if token_id in self._touched:
            return False
        self._touched[token_id] = True
        return True

    def __len__(self) -> int:
        return len(self._items)


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
        generation = cache.generation
        db = ctx_of(request).db
        async with db.session() as session:
            principal = await tokens.authenticate(session, token)
        if principal is None:
            raise _challenge("invalid or revoked token")
        if cache.touch_due(principal.token_id):
            # Once per cache period, not per request: "last used" to within CACHE_TTL.
            async with db.transaction() as session:
                await tokens.touch(session, principal.token_id)
        cache.put(key, principal, generation)
    return principal


def _challenge(message: str) -> Unauthenticated:
    exc = Unauthenticated(message)
    return exc
