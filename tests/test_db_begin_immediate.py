"""The server's SQLite write transactions begin with BEGIN IMMEDIATE, in the hop of their first
statement: a read-then-write transaction is one SQLite transaction against another process's
writer (the push worker process), not only against the server's own write queue.

pysqlite opens a transaction at the first write only, so the reads before it were transactions
of their own: another connection could commit between a decision read and the write it decided
(for the push worker's take that lost wake-ups, ``tests/test_push_take_atomic.py``). A lock held
by another process is waited for (timed: ``mdm_db_sqlite_lock_wait_seconds``), and a transaction
refused at the busy timeout is counted and logged as such."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from engines import ON_POSTGRES
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from mdm.db import engine as engine_module
from mdm.db import metrics as db_metrics
from mdm.db import sqlite_driver
from mdm.db.engine import Database

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="SQLite's locking: runs once, under SQLite")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "two-writers.sqlite3"


@pytest.fixture
async def setup(path: Path) -> AsyncIterator[None]:
    db = Database(f"sqlite+aiosqlite:///{path}")
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE stock (id INTEGER PRIMARY KEY, left INTEGER NOT NULL)"))
        await session.execute(text("CREATE TABLE taken (id INTEGER PRIMARY KEY, who TEXT NOT NULL)"))
        await session.execute(text("INSERT INTO stock VALUES (1, 1)"))
    await db.close()
    yield


def _the_other_process_takes_the_last_one(path: Path) -> str:
    """Another process's writer: the same read-then-write, committed at once (or refused)."""
    other = sqlite3.connect(path, timeout=0)
    try:
        (left,) = other.execute("SELECT left FROM stock WHERE id = 1").fetchone()
        if left < 1:
            return "none left"
        other.execute("UPDATE stock SET left = left - 1 WHERE id = 1")
        other.execute("INSERT INTO taken (who) VALUES ('other')")
        other.commit()
        return "written"
    except sqlite3.OperationalError as exc:
        return f"refused: {exc}"
    finally:
        other.close()


async def _take_the_last_one(db: Database, path: Path, inline: bool) -> tuple[list[str], int]:
    """The server: reads that one is left, decides, then writes; the other process writes just
    before the server's first write."""
    outcome: list[str] = []

    def between(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE stock") and not outcome:
            outcome.append(_the_other_process_takes_the_last_one(path))

    event.listen(db.engine.sync_engine, "before_cursor_execute", between)
    try:
        async with db.transaction(inline=inline) as session:
            left = (await session.execute(text("SELECT left FROM stock WHERE id = 1"))).scalar_one()
            assert left == 1  # the decision: one is left, take it
            await session.execute(text("UPDATE stock SET left = left - 1 WHERE id = 1"))
            await session.execute(text("INSERT INTO taken (who) VALUES ('server')"))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", between)
    async with db.session() as session:
        taken = (await session.execute(text("SELECT count(*) FROM taken"))).scalar_one()
    return outcome, taken


@pytest.mark.parametrize("inline", [False, True])
@pytest.mark.parametrize("immediate", [False, True])
async def test_a_read_then_write_transaction_is_atomic_against_another_process(
    setup: None, path: Path, immediate: bool, inline: bool
) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}", immediate=immediate)
    try:
        outcome, taken = await _take_the_last_one(db, path, inline)
    finally:
        await db.close()
    if immediate:  # the server holds the write lock since its read: the other writer must wait
        assert len(outcome) == 1 and outcome[0].startswith("refused") and "locked" in outcome[0]
        assert taken == 1
    else:  # the deferred begin: the other process took the last one between the read and the write
        assert outcome == ["written"]
        assert taken == 2  # ... and the server took it again: one item handed out twice


def test_the_server_and_the_push_worker_both_begin_immediate() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    assert db.immediate  # the default: every SQLite Database, the server's included
    assert not Database("postgresql+asyncpg://u@h/d").immediate


def _hold_the_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE stock SET left = 5 WHERE id = 1")
        held.set()
        threading.Event().wait(seconds)
        other.execute("COMMIT")
    finally:
        other.close()


def _histogram_count(histogram: Any) -> tuple[float, float]:
    samples = {s.name: s.value for metric in histogram.collect() for s in metric.samples}
    prefix = histogram._name
    return samples[f"{prefix}_count"], samples[f"{prefix}_sum"]


@pytest.mark.parametrize("inline", [False, True])
async def test_a_lock_held_by_another_process_is_waited_for_and_measured(
    setup: None, path: Path, inline: bool, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "LOCK_WAIT_WARN_SECONDS", 0.2)
    caplog.set_level(logging.WARNING, logger="mdm.db.engine")
    db = Database(f"sqlite+aiosqlite:///{path}")
    count0, sum0 = _histogram_count(db_metrics.LOCK_WAIT)
    held = threading.Event()
    holder = threading.Thread(target=_hold_the_write_lock, args=(path, 0.4, held))
    holder.start()
    try:
        await asyncio.to_thread(held.wait, 5)
        async with db.transaction(inline=inline) as session:
            left = (await session.execute(text("SELECT left FROM stock WHERE id = 1"))).scalar_one()
            await session.execute(text("UPDATE stock SET left = :l WHERE id = 1"), {"l": left - 1})
    finally:
        await asyncio.to_thread(holder.join)
        await db.close()
    count1, sum1 = _histogram_count(db_metrics.LOCK_WAIT)
    assert left == 5  # read after the other process committed: the read waited with the write
    assert count1 == count0 + 1 and 0.2 <= sum1 - sum0 < 5
    assert any("waited" in r.getMessage() and "write lock held by another process" in r.getMessage()
               for r in caplog.records)


async def test_a_transaction_refused_at_the_busy_timeout_is_counted_and_rolled_back(
    setup: None, path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT_MS", 200)
    caplog.set_level(logging.WARNING, logger="mdm.db.engine")
    db = Database(f"sqlite+aiosqlite:///{path}")
    refused0 = db_metrics.LOCK_REFUSED._value.get()
    held = threading.Event()
    holder = threading.Thread(target=_hold_the_write_lock, args=(path, 1.0, held))
    holder.start()
    try:
        await asyncio.to_thread(held.wait, 5)
        with pytest.raises(OperationalError, match="locked"):
            async with db.transaction() as session:
                await session.execute(text("SELECT left FROM stock WHERE id = 1"))
                pytest.fail("the transaction's first statement waits for the lock, then is refused")
        await asyncio.to_thread(holder.join)
        # The connection is usable again, and nothing of the refused transaction was written.
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO taken (who) VALUES ('after')"))
        async with db.session() as session:
            rows = (await session.execute(text("SELECT who FROM taken"))).scalars().all()
    finally:
        await asyncio.to_thread(holder.join)
        await db.close()
    assert rows == ["after"]
    assert db_metrics.LOCK_REFUSED._value.get() == refused0 + 1
    assert any("refused" in r.getMessage() and "busy timeout 200 ms" in r.getMessage()
               for r in caplog.records)


async def test_a_transaction_that_only_reads_leaves_no_lock_behind(setup: None, path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        for inline in (False, True):
            async with db.transaction(inline=inline) as session:
                await session.execute(text("SELECT left FROM stock WHERE id = 1"))
            assert _the_other_process_takes_the_last_one(path) in ("written", "none left")
    finally:
        await db.close()
