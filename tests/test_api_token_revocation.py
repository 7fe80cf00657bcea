"""A revoked admin API token stops working at once on every replica: the revoking replica clears
its token cache, the others hear a PostgreSQL NOTIFY; a replica that cannot hear them caches
nothing; a look-up that raced a revocation is not cached; a failed look-up writes nothing."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mdm.api.auth import TokenCache
from mdm.api.keys import TOKENS
from mdm.config import Config
from mdm.core.tokens import Principal
from mdm.db.engine import Database
from mdm.db.models import ApiToken
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, open_context
from tests.conftest import PG_URL, client_ssl_context, listener_url


async def _status(base_url: str, config: Config, secret: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, verify=client_ssl_context(config), timeout=30,
                                 headers={"Authorization": f"Bearer {secret}"}) as client:
        return (await client.get("/api/v1/devices")).status_code


async def _new_token(api: httpx.AsyncClient) -> str:
    created = await api.post("/api/v1/tokens", json={"name": "ci", "scopes": ["devices:read"]})
    assert created.status_code == 201
    return str(created.json()["token"])


@pytest.mark.skipif(not PG_URL, reason="replicas share a PostgreSQL database; SQLite is one process")
async def test_a_token_revoked_on_one_replica_is_refused_at_once_on_the_other(
    server: Server, config: Config, api: httpx.AsyncClient
) -> None:
    replica = Server(await open_context(config), PLUGINS)
    await replica.start()
    try:
        cache = replica.ctx.services[TOKENS]
        for _ in range(200):  # the replica listens before it caches anything
            if cache.live:
                break
            await asyncio.sleep(0.01)
        assert cache.live
        secret = await _new_token(api)
        on_b = listener_url(replica, "admin")
        assert await _status(on_b, config, secret) == 200  # now cached on the replica (30 s)
        assert len(cache) == 1
        assert (await api.delete("/api/v1/tokens/ci")).status_code == 200
        for _ in range(200):  # at most 2 s, far below the cache's 30 s
            if await _status(on_b, config, secret) == 401:
                break
            await asyncio.sleep(0.01)
        assert await _status(on_b, config, secret) == 401, "the revoked token still works on the replica"
    finally:
        await replica.stop()


def _principal() -> Principal:
    return Principal(token_id=1, name="ci", scopes=frozenset({"admin"}))


def test_a_look_up_that_raced_a_revocation_is_not_cached() -> None:
    cache = TokenCache()
    generation = cache.generation  # read before the look-up went to the database
    cache.clear()  # a revocation committed meanwhile (here, or heard from another replica)
    cache.put(b"k", _principal(), generation)
    assert cache.get(b"k") is None
    cache.put(b"k", _principal(), cache.generation)
    assert cache.get(b"k") is not None


def test_a_cache_that_cannot_hear_revocations_holds_nothing() -> None:
    cache = TokenCache(live=False)
    cache.put(b"k", _principal(), cache.generation)
    assert cache.get(b"k") is None
    cache.set_live(True)
    cache.put(b"k", _principal(), cache.generation)
    assert cache.get(b"k") is not None
    cache.set_live(False)  # the listening connection was lost: what it cached may be stale
    assert cache.get(b"k") is None


async def test_a_wrong_token_takes_no_write_and_a_right_one_is_touched_once_per_period(
    server: Server, config: Config, api: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = listener_url(server, "admin")
    secret = await _new_token(api)
    served = server.ctx.db
    opened_by: list[str] = []  # the functions that opened a write transaction on the server
    real = served.transaction

    def transaction(*args: Any, **kwargs: Any) -> Any:
        opened_by.append(sys._getframe(1).f_code.co_name)
        return real(*args, **kwargs)

    monkeypatch.setattr(served, "transaction", transaction)
    for _ in range(5):
        assert await _status(base, config, secret[:-4] + "AAAA") == 401
    assert "authenticate" not in opened_by, "an unauthenticated request took a write transaction"
    assert await _status(base, config, secret) == 200
    server.ctx.services[TOKENS].clear()  # (as a revocation of another token would)
    assert await _status(base, config, secret) == 200
    assert opened_by.count("authenticate") == 1, "last_used_at is written once per cache period"
    async with db.session() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
        assert row is not None and row.last_used_at is not None
