"""Dead letters through the admin API and the CLI, the reporting metrics on /metrics, and the
reporting worker running in the server with ``transport = "none"`` (both engines)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
from conftest import listener_url
from reporting_support import add_events, pending_ids, rows
from sqlalchemy import select
from test_cli_client import Cli

from mdm.config import Config
from mdm.core import store_outbox, tokens
from mdm.db.engine import Database
from mdm.db.models import Event, utcnow
from mdm.reporting.keys import WORKER
from mdm.server.runtime import Server

DEAD = "/api/v1/events/dead-letter"
REPLAY = "/api/v1/events/dead-letter/replay"


async def _dead(db: Database, specs: list[tuple[str, int | None]]) -> list[int]:
    ids = await add_events(db, specs)
    async with db.transaction() as session:
        assert await store_outbox.refuse(session, ids, "http_400: bad field", 1, utcnow()) == len(ids)
    return ids


async def test_list_filter_page_and_replay(server: Server, api: httpx.AsyncClient, db: Database) -> None:
    ids = await _dead(db, [("a", 1), ("b", 2), ("a", 2), ("a", 1)])
    await add_events(db, [("a", 1)])  # not dead: never listed
    page = (await api.get(DEAD)).json()
    assert [e["id"] for e in page["items"]] == ids and page["next_cursor"] is None
    first = page["items"][0]
    assert first["refusals"] == 1 and first["last_error"] == "http_400: bad field" and first["dead_at"]
    by_type = (await api.get(DEAD, params={"type": "a"})).json()["items"]
    assert [e["id"] for e in by_type] == [ids[0], ids[2], ids[3]]
    by_device = (await api.get(DEAD, params={"device": 2})).json()["items"]
    assert [e["id"] for e in by_device] == [ids[1], ids[2]]
    one = (await api.get(DEAD, params={"limit": 2})).json()
    two = (await api.get(DEAD, params={"limit": 2, "cursor": one["next_cursor"]})).json()
    assert [e["id"] for e in one["items"] + two["items"]] == ids

    r = await api.post(REPLAY, json={"ids": [ids[0], ids[1], 999999]})
    assert r.status_code == 200 and r.json() == {"requeued": 2}
    stored = await rows(db)
    assert stored[ids[0]].dead_at is None and stored[ids[0]].delivery_attempts == 0
    assert stored[ids[0]].last_error is None and stored[ids[2]].dead_at is not None
    r = await api.post(REPLAY, json={"all": True})
    assert r.json() == {"requeued": 2} and (await api.get(DEAD)).json()["items"] == []
    async with db.session() as session:
        replayed = (await session.scalars(select(Event).where(Event.type == "events_replayed"))).all()
    assert sorted(e.body["count"] for e in replayed) == [2, 2]
    assert {e.body["by"] for e in replayed} == {"test-admin"}


async def test_bad_replay_requests_are_precise_4xx(server: Server, api: httpx.AsyncClient, db: Database,
                                                    config: Config) -> None:
    for body in ({}, {"ids": []}, {"ids": [1], "all": True}, {"all": False}, {"ids": ["x"]}, {"ids": [0]},
                 {"ids": list(range(1, 1002))}, {"every": True}):
        r = await api.post(REPLAY, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["message"]
    r = await api.get(DEAD, params={"cursor": "x"})
    assert r.status_code == 400
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["events:read"])
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await api.get(DEAD, headers=headers)).status_code == 200
    assert (await api.post(REPLAY, json={"all": True}, headers=headers)).status_code == 403
    async with httpx.AsyncClient(base_url=listener_url(server, "admin"), verify=False) as anonymous:
        assert (await anonymous.get(DEAD)).status_code == 401


async def test_metrics_and_the_worker_with_no_transport(server: Server, api: httpx.AsyncClient,
                                                       db: Database) -> None:
    worker = server.ctx.services[WORKER]
    assert worker.transport is None
    for _ in range(100):
        if worker.holding:
            break
        await asyncio.sleep(0.05)
    assert worker.holding  # the one replica holds the lock: it prunes, it does not deliver
    await _dead(db, [("a", 1)])
    old = await add_events(db, [("a", 1), ("b", 1)])
    async with db.transaction() as session:
        await store_outbox.mark_delivered(session, old, utcnow() - timedelta(days=30))
    assert await worker.upkeep.prune() == 2
    await worker.upkeep.publish()
    text = (await api.get("/metrics")).text
    assert "mdm_reporting_dead_letters 1.0" in text
    backlog = len(await pending_ids(db))  # the server's own audit events wait too
    assert f"mdm_reporting_backlog {float(backlog)}" in text
    assert "mdm_reporting_deliverer 1.0" in text
    for name in ("mdm_reporting_delivered_total", "mdm_reporting_delivery_latency_seconds_bucket",
                 "mdm_reporting_oldest_undelivered_seconds", "mdm_reporting_pruned_total"):
        assert name in text, name
    status = await api.get("/api/v1/status")
    if status.status_code == 200:  # the status endpoint, where this build has it
        assert "core link not configured" in status.text


async def test_cli_lists_and_replays(server: Server, config: Config, db: Database, admin_token: str,
                                     tmp_path: Path) -> None:
    ids = await _dead(db, [("a", 1), ("b", 2)])
    cli = Cli(listener_url(server, "admin"), admin_token, config.data_path, tmp_path)
    out = await cli.ok("events", "dead-letter")
    assert "http_400: bad field" in out and " b " in f" {out} "
    listed = json.loads(await cli.ok("events", "dead-letter", "--type", "b", "--json"))
    assert [e["id"] for e in listed["items"]] == [ids[1]]
    assert "1 event(s) put back" in await cli.ok("events", "dead-letter", "replay", str(ids[0]))
    assert json.loads(await cli.ok("events", "dead-letter", "replay", "--all", "--json")) == {"requeued": 1}
    bad = await cli("events", "dead-letter", "replay")
    assert bad.returncode == 2 and "give event ids, or --all" in bad.stderr
    bad = await cli("events", "dead-letter", "replay", "abc")
    assert bad.returncode == 2 and "expected a positive integer" in bad.stderr
    assert "no dead-lettered events" in (await cli("events", "dead-letter")).stderr
    assert (await cli("events", "--limit", "5")).returncode == 0  # the event list is still there
