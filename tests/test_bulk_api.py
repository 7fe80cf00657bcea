"""Bulk operations over the admin API: 202 at once, GET /bulk/{id} counts while it runs and after
(delivered / completed / failed from the commands, woken from the push receipts), skipped devices
paged, the list newest first, DELETE recalls, and the clear refusals (404, 422, 401, 400)."""

from __future__ import annotations

import httpx
from bulk_support import add_devices, count, send_bulk, wait_bulk
from event_rows import SERVER_OWN
from sqlalchemy import select

from mdm.api.keys import BULK
from mdm.core import commands
from mdm.db.engine import Database
from mdm.db.models import BulkOperation, Command, Event, Group, Protocol
from mdm.server.runtime import Server


async def test_counts_follow_the_commands(api: httpx.AsyncClient, db: Database, server: Server) -> None:
    ids = await add_devices(db, 6)
    op = await send_bulk(api, "all", "Block")
    counts = ("targeted", "queued", "skipped", "pending", "delivered")
    assert [op[k] for k in counts] == [6, 6, 0, 6, 0]
    assert op["finished_at"] is not None and op["created_by"] == "test-admin"
    # Two are delivered, one of them completes and one fails.
    async with db.transaction() as session:
        rows = await session.scalars(select(Command).where(Command.bulk_id == op["id"]).order_by(Command.id))
        first, second = list(rows.all())[:2]
        for c in (first, second):
            claimed = await commands.claim(session, c.id)
            assert claimed is not None
            await commands.delivered(session, claimed)
        await commands.complete(session, first, success=True)
        await commands.complete(session, second, success=False, info="no")
    await server.ctx.services[BULK].accepted({f"bulk:{op['id']}": 5, "command": 3, "bulk:x": 1})
    service = server.ctx.services[BULK]
    service.view_ttl = 0  # the cache is per second; this test wants the fresh counts
    r = await api.get(f"/api/v1/bulk/{op['id']}")
    body = r.json()
    counts = ("delivered", "completed", "failed", "pending", "woken")
    assert [body[k] for k in counts] == [2, 1, 1, 4, 5]
    # Recall: what is still queued and never delivered.
    r = await api.delete(f"/api/v1/bulk/{op['id']}")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["recalled"], r.json()["pending"]) == ("recalled", 4, 0)
    again = await api.delete(f"/api/v1/bulk/{op['id']}")
    assert again.status_code == 200 and again.json()["recalled"] == 4
    assert len(ids) == 6


async def test_skipped_paged_and_list_newest_first(api: httpx.AsyncClient, db: Database) -> None:
    ios = await add_devices(db, 5)
    kes = await add_devices(db, 5, Protocol.KES, prefix="kes", os_name=None)
    first = await send_bulk(api, "all", "EditRoamingSettings", {"voice_roaming": True})
    assert (first["queued"], first["skipped"]) == (5, 5)
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        page = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await api.get(f"/api/v1/bulk/{first['id']}/skipped", params=page)
        assert r.status_code == 200
        seen += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    reason = "EditRoamingSettings is not supported on kes devices"
    assert seen == [{"device": k, "reason": reason} for k in kes]
    second = await send_bulk(api, ios[:2], "Block")
    r = await api.get("/api/v1/bulk", params={"limit": 1})
    assert [o["id"] for o in r.json()["items"]] == [second["id"]]
    r = await api.get("/api/v1/bulk", params={"cursor": r.json()["next_cursor"]})
    assert [o["id"] for o in r.json()["items"]] == [first["id"]] and r.json()["next_cursor"] is None
    assert second["target"] == {"kind": "devices", "group": None}


async def test_refusals_record_nothing(api: httpx.AsyncClient, db: Database, server: Server) -> None:
    r = await api.post("/api/v1/commands", json={"devices": "all", "type": "Block"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_targets"
    assert r.json()["error"]["message"] == "there is no device to send it to"
    r = await api.post("/api/v1/commands", json={"devices": [7, 8], "type": "Block"})
    assert r.status_code == 422 and "none of the 2 device id(s)" in r.json()["error"]["message"]
    async with db.transaction() as session:
        group = Group(name="empty")
        session.add(group)
        await session.flush()
        gid = group.id
    r = await api.post("/api/v1/commands", json={"devices": {"group": gid}, "type": "Block"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == f"group {gid} and its subgroups have no device"
    r = await api.post("/api/v1/commands", json={"devices": {"group": gid + 100}, "type": "Block"})
    assert r.status_code == 404 and r.json()["error"]["message"] == f"no group {gid + 100}"
    await add_devices(db, 2)
    bad = {"devices": "all", "type": "InstallConfProf", "args": {"x": 1}}
    r = await api.post("/api/v1/commands", json=bad)
    assert r.status_code == 422 and "unknown argument 'x'" in r.json()["error"]["message"]
    r = await api.post("/api/v1/commands", json={"devices": "all", "type": "Raw", "args": {"a": 1}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_argument"
    r = await api.post("/api/v1/commands", json={"devices": "all", "type": "Nope"})
    assert r.status_code == 400
    assert await count(db, select(BulkOperation.id)) == 0
    assert await count(db, select(Event.id).where(Event.type.not_in(SERVER_OWN))) == 0
    for method, path in (("GET", "/api/v1/bulk/99"), ("DELETE", "/api/v1/bulk/99"),
                         ("GET", "/api/v1/bulk/99/skipped")):
        r = await api.request(method, path)
        assert r.status_code == 404 and r.json()["error"]["message"] == "no bulk operation 99"
    r = await api.get("/api/v1/bulk/1", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await api.get("/api/v1/bulk/1/skipped", params={"cursor": "x"})
    assert r.status_code == 400


async def test_events_of_a_bulk_operation(api: httpx.AsyncClient, db: Database) -> None:
    ids = await add_devices(db, 3)
    r = await api.post("/api/v1/commands", json={"devices": "all", "type": "Block"})
    op = await wait_bulk(api, r.json()["id"])
    events = (await api.get("/api/v1/events", params={"limit": 50})).json()["items"]
    kinds = [e["type"] for e in reversed(events) if e["type"] not in SERVER_OWN | {"admin_action"}]
    assert kinds == ["bulk_command_created", "commands_created", "bulk_command_queued"]
    created = next(e for e in events if e["type"] == "commands_created")["body"]
    assert created["count"] == 3 and [d for d, _ in created["commands"]] == ids
    assert created["bulk"] == op["id"] and created["command_type"] == "Block"


async def test_a_long_recall_answers_202_and_the_worker_finishes_it(
    api: httpx.AsyncClient, db: Database, server: Server
) -> None:
    """A recall longer than the request's budget (10^6 commands: tens of seconds) is not held in
    the request: 202 with state ``recalling``, and the bulk worker takes the rest in batches."""
    await add_devices(db, 9)
    op = await send_bulk(api, "all", "Block")
    service = server.ctx.services[BULK]
    service.batch_size, service.recall_seconds = 2, 0.0  # one batch, then the budget is spent
    r = await api.delete(f"/api/v1/bulk/{op['id']}")
    assert r.status_code == 202, r.text
    assert (r.json()["state"], r.json()["recalled"]) == ("recalling", 2)
    service.view_ttl = 0
    done = await wait_bulk(api, op["id"])
    assert (done["state"], done["recalled"], done["pending"]) == ("recalled", 9, 0)
    removed = select(Command).where(Command.bulk_id == op["id"], Command.status == "removed")
    assert await count(db, removed) == 9
