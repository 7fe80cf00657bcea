"""The delivering replica's upkeep (both engines): events undelivered for too long are
dead-lettered, delivered events past retention are deleted, both in chunks of their own
transactions; the backlog figures reach the link-state row."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from reporting_support import add_events, pending_ids, rows, settings

from mdm.core import store_outbox
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.reporting import service_upkeep
from mdm.reporting import store as link_store
from mdm.reporting.link import LinkMonitor
from mdm.reporting.service_upkeep import AGED_OUT, Upkeep
from tests.write_holds import busy_loop, record_holds


def _upkeep(db: Database, chunk: int, **overrides: object) -> Upkeep:
    return Upkeep(db, settings(**overrides), LinkMonitor("test:1", utcnow()), delivering=True, chunk=chunk)


class Counting:
    """Counts the transactions a pass opens (each chunk is one)."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = 0
        real = db.transaction

        def counted(**kw: bool):  # type: ignore[no-untyped-def]
            self.opened += 1
            return real(**kw)

        monkeypatch.setattr(db, "transaction", counted)


async def test_old_undelivered_events_are_dead_lettered_in_chunks(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    old = await add_events(db, [("old", 1)] * 25, created_at=now - timedelta(days=20))
    young = await add_events(db, [("young", 1)] * 3)
    upkeep = _upkeep(db, 10, dead_letter_after_seconds=14 * 86400)
    counting = Counting(db, monkeypatch)
    assert await upkeep.dead_letter_aged() == 25
    assert counting.opened == 3  # 10 + 10 + 5
    stored = await rows(db)
    assert all(stored[i].dead_at is not None and stored[i].last_error == AGED_OUT for i in old)
    assert all(stored[i].delivery_attempts == 0 for i in old)  # aged out, never refused
    assert await pending_ids(db) == young
    assert await upkeep.dead_letter_aged() == 0


async def test_delivered_events_past_retention_are_pruned_in_chunks(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    expired = await add_events(db, [("e", 1)] * 23)
    recent = await add_events(db, [("r", 1)] * 4)
    waiting = await add_events(db, [("w", 1)] * 2, created_at=now - timedelta(days=30))
    async with db.transaction() as session:
        await store_outbox.mark_delivered(session, expired, now - timedelta(days=8))
        await store_outbox.mark_delivered(session, recent, now - timedelta(days=6))
    upkeep = _upkeep(db, 10, retention_seconds=7 * 86400)
    counting = Counting(db, monkeypatch)
    assert await upkeep.prune() == 23
    assert counting.opened == 3
    assert sorted(await rows(db)) == sorted(recent + waiting)  # never an undelivered one
    assert await upkeep.prune() == 0


async def test_a_pass_stops_at_its_time_budget(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await add_events(db, [("e", 1)] * 30)
    async with db.transaction() as session:
        await store_outbox.mark_delivered(session, ids, utcnow() - timedelta(days=30))
    monkeypatch.setattr(service_upkeep, "PASS_BUDGET_SECONDS", 0.0)
    upkeep = _upkeep(db, 10)
    assert await upkeep.prune() == 0  # the budget is spent before the first chunk
    monkeypatch.setattr(service_upkeep, "PASS_BUDGET_SECONDS", 20.0)
    assert await upkeep.prune() == 30


async def test_publish_writes_the_backlog_figures_to_the_link_row(db: Database) -> None:
    now = utcnow()
    await add_events(db, [("w", 1)] * 3, created_at=now - timedelta(minutes=10))
    ids = await add_events(db, [("d", 1)])
    async with db.transaction() as session:
        await store_outbox.refuse(session, ids, "http_400", 1, now)
    upkeep = _upkeep(db, 10)
    await upkeep.publish()
    async with db.session() as session:
        row = await link_store.read(session)
    assert row is not None and row.backlog == 3 and row.dead_letters == 1 and row.up
    assert row.oldest_undelivered_at is not None and now - row.oldest_undelivered_at >= timedelta(minutes=10)
    await upkeep.publish()  # the second write updates the one row
    async with db.session() as session:
        again = await link_store.read(session)
    assert again is not None and again.updated_at >= row.updated_at


async def test_the_age_sweep_reads_only_the_head_of_the_backlog(db: Database) -> None:
    """Old events behind a chunk of young ones wait for the next pass (bounded reads)."""
    now = utcnow()
    young = await add_events(db, [("young", 1)] * 10)
    old = await add_events(db, [("old", 1)] * 3, created_at=now - timedelta(days=20))
    upkeep = _upkeep(db, 10)
    assert await upkeep.dead_letter_aged() == 0
    async with db.transaction() as session:
        await store_outbox.mark_delivered(session, young, now)
    assert await upkeep.dead_letter_aged() == 3
    assert all(r.dead_at is not None for i, r in (await rows(db)).items() if i in old)


async def test_the_undelivered_gauge_leaves_dead_letters_out_and_reads_the_backlog_index(
    db: Database,
) -> None:
    """/metrics counts the undelivered events at every scrape: dead letters are not waiting for
    delivery, and the count must come from the partial index of the backlog, not a table scan."""
    from sql_capture import selects
    from sqlalchemy import update

    from mdm.core import store_events
    from mdm.db.models import Event

    first, _second = await add_events(db, [("a", 1), ("b", 1)])
    async with db.transaction() as session:
        await session.execute(update(Event).where(Event.id == first).values(dead_at=utcnow()))
    with selects(db) as seen:
        async with db.session() as session:
            assert await store_events.undelivered_count(session) == 1
    if db.is_sqlite:
        [(statement, parameters)] = seen
        async with db.engine.connect() as conn:
            found = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = " | ".join(str(r[-1]) for r in found)
        assert "ix_events_undelivered" in plan, plan


async def test_a_chunk_holds_the_write_queue_for_its_own_work_only(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the event loop kept busy 100 ms per turn, neither a prune that finds nothing nor its
    chunks hold SQLite's write queue across a turn (1.8 s seen for an empty prune in a storm)."""
    if not db.is_sqlite:
        pytest.skip("SQLite's write queue")
    ids = await add_events(db, [("e", 1)] * 25)
    async with db.transaction() as session:
        await store_outbox.mark_delivered(session, ids, utcnow() - timedelta(days=30))
    held = record_holds(monkeypatch)
    async with busy_loop():
        upkeep = _upkeep(db, 10)
        assert await upkeep.prune() == 25
        assert await upkeep.prune() == 0
        await upkeep.publish()
    assert len(held) == 3 + 1 + 1
    assert max(held) < 0.1, held
