"""One-time tokens presented again, over the wire: a used SCEP challenge in a new transaction, and a
downloaded enrollment link fetched again, each refused and reported as ``security_token_reused``
once (a replay loop writes no more)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import client_ssl_context
from enroll_support import APNS_TOML
from scep_tools.support import make_challenge, make_user, new_key, scep_url
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.scep import client
from mdm.server.runtime import Server


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


async def reused(db: Database) -> list[Event]:
    async with db.session() as session:
        stmt = select(Event).where(Event.type == "security_token_reused").order_by(Event.id)
        return list((await session.scalars(stmt)).all())


async def test_a_used_scep_challenge_presented_again(server: Server, config: Config, db: Database) -> None:
    challenge = await make_challenge(db, user_id=await make_user(db))
    ssl = client_ssl_context(config)
    await client.enroll(scep_url(server), challenge, "device-1", new_key(), ssl_context=ssl)
    assert await reused(db) == []  # its first use is no reuse
    for attempt in range(3):
        with pytest.raises(client.ScepError):
            await client.enroll(scep_url(server), challenge, f"replay-{attempt}", new_key(), ssl_context=ssl)
    found = await reused(db)
    assert len(found) == 1, [e.body for e in found]
    body = found[0].body
    assert body["kind"] == "scep_challenge" and isinstance(body["challenge"], int) and body["transaction_id"]
    assert found[0].severity == "warning"


async def test_a_downloaded_enrollment_link_fetched_again(
    server: Server, config: Config, api: httpx.AsyncClient, db: Database
) -> None:
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice"})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    link = created["url"].replace("localhost", "127.0.0.1")
    async with httpx.AsyncClient(verify=client_ssl_context(config), timeout=60) as web:
        assert (await web.get(link)).status_code == 200
        assert await reused(db) == []
        for _ in range(3):
            again = await web.get(link)
            assert again.status_code == 410 and "already been used" in again.text
    found = await reused(db)
    assert [e.body for e in found] == [
        {"kind": "enrollment_link", "enrollment_id": created["id"], "peer": "127.0.0.1"}
    ]
