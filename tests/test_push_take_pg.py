"""PostgreSQL's take locks its rows first and works out what is owed over the locked rows only,
under a statement timeout. At 10^6 devices one push worker's take ran for over six minutes (its
per-row work, a ``command_queue`` probe and the devices' columns, done for rows it then skipped or
never needed) while the other worker did all the pushing; nothing bounded how long it could run."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from push_dispatch_support import ScriptedTransport, add_device, queue_command
from sqlalchemy import text

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import dispatcher as dispatcher_module
from mdm.push import store, store_pg
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.tables import REPUSH


def _postgresql(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's take (SQLite reads outside its write lock: test_push_take_atomic)")


async def _repushes(db: Database, count: int) -> list[int]:
    """``count`` devices owed a re-push (each with a command queued), due one second apart."""
    ids = [await add_device(db, f"r{i}", token=f"t{i}") for i in range(count)]
    for device_id in ids:
        await queue_command(db, device_id)
    base = datetime.now(UTC) - timedelta(hours=1)
    async with db.transaction() as session:
        for n, device_id in enumerate(ids):
            await session.execute(text(
                "INSERT INTO push_wakeups (device_id, due_at, reason, attempts, requests, created_at, "
                "last_attempt_at) VALUES (:d, :due, :r, 1, 1, :due, :due)"
            ), {"d": device_id, "due": base + timedelta(seconds=n), "r": REPUSH})
    return ids


def _subplan_loops(plan: Any) -> int:
    """How many times the plan's sub-selects on ``command_queue`` ran (EXPLAIN ANALYZE, JSON)."""
    loops = 0
    if plan.get("Parent Relationship") == "SubPlan" or plan.get("Subplan Name", "").startswith("SubPlan"):
        loops += int(plan.get("Actual Loops", 0))
    for child in plan.get("Plans", []):
        loops += _subplan_loops(child)
    return loops


async def test_the_take_probes_the_queue_only_for_the_rows_it_locked(db: Database) -> None:
    """Another worker holds the first 20 due rows: the take skips them and locks the next 10, and
    asks whether a device has a command to fetch for those 10 only (the single-statement take
    asked it for the 20 skipped rows too: per row scanned before the lock, not per row taken)."""
    _postgresql(db)
    ids = await _repushes(db, 50)
    now = datetime.now(UTC)
    async with db.engine.connect() as other:  # the other worker, mid-take
        await other.begin()
        await other.execute(text(
            "SELECT device_id FROM push_wakeups ORDER BY due_at LIMIT 20 FOR UPDATE"))
        async with db.engine.connect() as conn:  # the take's statement, run and rolled back
            form = store_pg._TAKE.form(conn.dialect)
            values = form.values({"now": now, "limit": 10, "protocols": [Protocol.IOS.value],
                                  "lease": now + timedelta(minutes=1), "paced": [], "room": 10})
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None and values is not None
            rolled_back = raw.transaction()
            await rolled_back.start()
            explained = await raw.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {form.sql}", *values)
            explained = json.loads(explained) if isinstance(explained, str) else explained
            await rolled_back.rollback()
        async with db.transaction() as session:
            taken = await store.take(session, now, 10, [Protocol.IOS.value], now + timedelta(minutes=1))
        await other.rollback()
    assert [row.device_id for row in taken.due] == ids[20:30]  # due order, the locked ones skipped
    assert all(row.requests == 1 and row.attempts == 2 for row in taken.due)
    assert explained is not None and _subplan_loops(explained[0]["Plan"]) == 10


async def test_a_take_that_runs_too_long_is_cancelled_and_the_worker_goes_on(
    db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A take stuck behind a lock (or a plan gone wrong) is cancelled by PostgreSQL after the
    take's timeout; the worker logs it, takes again after a pause, and the row is pushed once the
    table is free: nothing lost, no worker stuck for minutes."""
    _postgresql(db)
    monkeypatch.setattr(dispatcher_module, "TAKE_TIMEOUT_SECONDS", 0.3)
    transport = ScriptedTransport()
    dispatcher = PushDispatcher(db, PushConfig(batch_size=10), {Protocol.IOS: transport})
    dispatcher.idle_seconds = 0.2
    device = await add_device(db, "stuck", token="t-stuck")
    await dispatcher.wake(device, "command")
    caplog.set_level(logging.WARNING, logger="mdm.push")
    async with db.engine.connect() as other:
        await other.begin()
        await other.execute(text("LOCK TABLE push_wakeups IN ACCESS EXCLUSIVE MODE"))
        worker = asyncio.create_task(dispatcher.run())
        try:
            for _ in range(200):  # the take waits for the lock, then is cancelled (0.3 s)
                if any("push dispatch pass failed" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            assert any("statement timeout" in r.getMessage() for r in caplog.records), caplog.text
            assert transport.sent == []
            await other.rollback()  # the table free again
            await asyncio.wait_for(transport.got.wait(), 15)
            assert transport.tokens() == ["t-stuck"]
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await dispatcher.close()
