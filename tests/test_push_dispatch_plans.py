"""The dispatcher's statements on owed wake-ups walk the owed rows, never the fleet: SQLite
(without statistics) planned the take and the next-due look-up from the devices' protocol index,
visiting every device of the protocol and sorting every owed row for each batch of 1,000 (the
cost of a batch grew with the fleet: 10^6 woken took 15 times as long as 10^5)."""

from __future__ import annotations

from typing import Any

import pytest
from push_dispatch_support import ScriptedTransport, add_device
from sqlalchemy import event, text

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import store
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher


async def _plans(db: Database, run: Any) -> dict[str, list[str]]:
    """The SQLite query plan of each SELECT on push_wakeups that ``run`` makes."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: object, cursor: object, statement: str, params: Any, context: object,
                executemany: bool) -> None:
        if statement.startswith("SELECT") and "FROM push_wakeups" in statement:
            seen.append((statement, params))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await run()
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    plans: dict[str, list[str]] = {}
    async with db.session() as session:
        for statement, params in seen:
            raw = await session.connection()
            rows = await raw.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", tuple(params))
            plans[statement] = [str(row[3]) for row in rows]
    return plans


async def test_the_take_and_the_next_due_time_walk_the_due_index(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's planner; PostgreSQL plans from its statistics")
    dispatcher = PushDispatcher(db, PushConfig(batch_size=10), {Protocol.IOS: ScriptedTransport()})
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(5)]
    async with db.transaction() as session:  # devices nobody owes anything to
        await session.execute(text(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
            "INSERT INTO devices (protocol, identifier, inventory, attributes, status, supported_commands, "
            "enrolled_at, push_valid) SELECT 1, 'x' || i, '{}', '{}', 'ok', 0, '2026-01-01', 1 FROM n"
        ))
    await dispatcher.wake_many(ids, "bulk:1")

    async def one_pass() -> None:
        assert await dispatcher.dispatch_once() == 5
        async with db.session() as session:
            assert await store.next_due(session, dispatcher.protocols) is None

    try:
        plans = await _plans(db, one_pass)
    finally:
        await dispatcher.close()
    assert len(plans) == 2, plans  # the take and the next due time
    for statement, plan in plans.items():
        first = plan[0] if plan else ""
        assert "push_wakeups USING" in first and "ix_push_wakeups_due_at" in first, (statement, plan)
        assert not any("TEMP B-TREE" in step for step in plan), (statement, plan)


async def test_recovery_reads_the_queue_not_the_fleet_and_outside_its_writes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 10^6 devices the recovery pass (at start and every retry_seconds) was an INSERT … SELECT
    in a write transaction planned from the devices' protocol index: every device visited, 1.8-3.4 s
    holding SQLite's writer with nothing queued. It now reads a page of candidates walking the
    queue (devices looked up by key), outside any write transaction, then owes them in one write."""
    from sql_capture import sent_in_write_transactions
    from sqlalchemy import text as sql_text

    from mdm.push import sweeps

    dispatcher = PushDispatcher(db, PushConfig(batch_size=10), {Protocol.IOS: ScriptedTransport()})
    async with db.transaction() as session:  # a fleet with nothing queued
        await session.execute(sql_text(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
            "INSERT INTO devices (protocol, identifier, inventory, attributes, status, supported_commands, "
            "enrolled_at, push_valid, push_token) "
            "SELECT 1, 'x' || i, '{}', '{}', 'ok', 0, '2026-01-01', true, 'tok' || i FROM n"
        ))
    with sent_in_write_transactions(db, monkeypatch) as written:
        assert await sweeps.recover(dispatcher) == 0
    assert [s for s in written if "command_queue" in s and "GROUP BY" in s] == []
    if db.is_sqlite:
        try:
            plans = await _plans(db, lambda: sweeps.recover(dispatcher))
        finally:
            await dispatcher.close()
        (plan,) = [p for s, p in plans.items() if "command_queue" in s]
        assert "command_queue" in plan[0] and "devices" not in plan[0], plan
        assert not any("TEMP B-TREE" in step for step in plan), plan  # streams in index order
    else:
        await dispatcher.close()
