"""Bad input on POST /kes/v1/sync: each gets a specific 4xx code and a log line, and nothing of
the sync is written (snapshots of the tables before and after)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import CommandStatus
from mdm.server.runtime import Server
from tests.ios_support import snapshot
from tests.kes_sync_support import Agent, command, enqueue, event_types, new_agent, result

pytestmark = pytest.mark.asyncio


@pytest.fixture
def extra_config() -> str:
    return "[kes]\nmin_sync_spacing_seconds = 0\nmax_body_bytes = 8192\n"


async def _refused(
    agent: Agent, client: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture,
    status: int, code: str, **post: Any,
) -> httpx.Response:
    before = await snapshot(db, skip=("events", "kes_devices", "devices"))
    devices_before = await snapshot(db, skip=())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        response = await client.post("/kes/v1/sync", **post)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert any(code in r.getMessage() or getattr(r, "code", None) == code for r in caplog.records), code
    assert await snapshot(db, skip=("events", "kes_devices", "devices")) == before
    after = await snapshot(db, skip=())
    for table in ("devices", "kes_devices", "commands", "command_queue", "command_journal"):
        assert after.get(table) == devices_before.get(table), table
    return response


@pytest.fixture
async def agent(db: Database, config: Config) -> Agent:
    return await new_agent(db, config)


async def test_malformed_json_and_schema_violations(
    server: Server, db: Database, agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    async with agent.client(server) as client:
        await _refused(agent, client, db, caplog, 400, "malformed_json", content=b"{not json",
                       headers={"Content-Type": "application/json"})
        await _refused(agent, client, db, caplog, 400, "unsupported_version",
                       json={**agent.message(), "v": 2})
        await _refused(agent, client, db, caplog, 422, "schema_violation",
                       json=agent.message(status={"battery_level": "full"}))
        await _refused(agent, client, db, caplog, 422, "schema_violation",
                       json=agent.message(results=[{**result("6C5E0B5E-0000-4000-8000-000000000001"),
                                                     "status": "done"}]))
        await _refused(agent, client, db, caplog, 422, "schema_violation",
                       json=agent.message(unknown_field=1))
        await _refused(agent, client, db, caplog, 422, "schema_violation",
                       json=agent.message(inventory={"location": {"latitude": 1}}))


async def test_an_oversized_inventory_is_413(
    server: Server, db: Database, agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    apps = {"items": [{"package": f"com.example.app{i}", "version": "1.0.0"} for i in range(400)]}
    async with agent.client(server) as client:
        await _refused(agent, client, db, caplog, 413, "payload_too_large",
                       json=agent.message(inventory={"apps": apps}))


async def test_results_for_unknown_foreign_or_undelivered_commands(
    server: Server, config: Config, db: Database, agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    other = await new_agent(db, config)
    foreign = await enqueue(db, other.device_id, "Block")
    undelivered = await enqueue(db, agent.device_id, "Alarm")
    async with other.client(server) as client:
        await other.sync(client)  # delivered to the other device
    delivered = await enqueue(db, agent.device_id, "Block")
    async with agent.client(server) as client:
        answer = (await agent.sync(client)).json()
        assert {c["id"] for c in answer["commands"]} == {delivered, undelivered}
        undelivered2 = await enqueue(db, agent.device_id, "Locate")
        for guid in ("6C5E0B5E-0000-4000-8000-000000000001", foreign, undelivered2):
            # A good result beside the bad one: nothing of the sync is applied.
            await _refused(agent, client, db, caplog, 409, "unknown_command",
                           json=agent.message(results=[result(delivered), result(guid)],
                                              status={"battery_level": 3}))
    assert (await command(db, delivered)).status == CommandStatus.PROCESSING
    assert (await command(db, foreign)).status == CommandStatus.PROCESSING
    # Each refusal of a bound device's message is also a security event (the first few per source).
    rejected = [t for t in await event_types(db, agent.device_id) if t == "kes_sync_rejected"]
    assert len(rejected) == 3


async def test_duplicate_results_are_accepted_once_and_conflicting_ones_refused(
    server: Server, db: Database, agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    guid = await enqueue(db, agent.device_id, "Block")
    async with agent.client(server) as client:
        await agent.sync(client)
        first = result(guid)
        assert (await agent.sync(client, results=[first, first])).status_code == 200
        # The same result again (a new request id): accepted, nothing written but the request's id.
        before = await snapshot(db, skip=("kes_devices",))
        assert (await agent.sync(client, results=[first])).status_code == 200
        assert await snapshot(db, skip=("kes_devices",)) == before
        await _refused(agent, client, db, caplog, 409, "result_conflict",
                       json=agent.message(results=[result(guid, "failed", error="no")]))
        other = await enqueue(db, agent.device_id, "Alarm")
        await agent.sync(client)
        await _refused(agent, client, db, caplog, 409, "result_conflict",
                       json=agent.message(results=[result(other), result(other, "failed")]))
    assert (await command(db, guid)).status == CommandStatus.COMPLETED


async def test_a_sync_storm_is_refused_with_retry_after_without_a_database_write(
    server: Server, db: Database, agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    service = server.ctx.services[_sync_key()]
    service.config = service.config.model_copy(update={"min_sync_spacing_seconds": 30.0})
    async with agent.client(server) as client:
        assert (await agent.sync(client)).status_code == 200
        await service.last_sync.flush(db)
        before = await snapshot(db, skip=())
        for _ in range(20):
            caplog.clear()
            with caplog.at_level(logging.INFO):
                response = await agent.sync(client, status={"battery_level": 9})
            assert response.status_code == 429 and response.json()["error"]["code"] == "sync_too_frequent"
            assert 1 <= int(response.headers["Retry-After"]) <= 30
            assert any("sync refused" in r.getMessage() for r in caplog.records)
        assert len(service.last_sync) == 0  # not even the write-behind was touched
        assert await snapshot(db, skip=()) == before


def _sync_key():  # type: ignore[no-untyped-def]
    from mdm.kes.keys_sync import SYNC

    return SYNC


async def test_without_a_client_certificate_the_sync_is_refused(server: Server, config: Config) -> None:
    from tests.conftest import client_ssl_context, listener_url

    url, verify = listener_url(server, "kes"), client_ssl_context(config)
    async with httpx.AsyncClient(base_url=url, verify=verify) as c:
        response = await c.post("/kes/v1/sync", json=Agent.message())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "client_certificate_required"
