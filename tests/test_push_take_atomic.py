"""The push worker process and the server are two SQLite writers. pysqlite opens a transaction
only at its first write, so the take's SELECT (which decides a row is owed nothing more) and its
DELETE were two transactions as far as the other process was concerned: a wake-up the server
requested in between was deleted with the stale row (a quiet 10^6 fleet run lost 423 bulk
wake-ups until the recovery pass, 300 s later). A ``Database(immediate=True)`` (the worker's)
takes SQLite's write lock when its transaction begins."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from push_dispatch_support import add_device
from sqlalchemy import event, text

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import store
from mdm.push.tables import REPUSH


async def _stale_repush(db: Database, device_id: int) -> None:
    async with db.transaction() as session:
        await session.execute(text(
            "INSERT INTO push_wakeups (device_id, due_at, reason, attempts, requests, created_at) "
            "VALUES (:d, '2026-01-01 00:00:00.000000', :r, 1, 1, '2026-01-01 00:00:00.000000')"
        ), {"d": device_id, "r": REPUSH})


@pytest.mark.parametrize("immediate", [False, True])
async def test_a_request_between_the_takes_read_and_its_write_is_not_lost(
    db: Database, immediate: bool
) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's locking; PostgreSQL's take locks its rows (FOR UPDATE SKIP LOCKED)")
    device = await add_device(db, "x", token="t")
    await _stale_repush(db, device)  # a re-push of an old command: nothing queued now
    path = db.url.split("///", 1)[1].split("?", 1)[0]
    worker = Database(db.url, immediate=immediate)
    outcome: list[str] = []

    def the_server_requests(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The other process: a bulk batch queued a command for the device, then asked for its
        # wake-up, just as the worker is about to drop the row it read as owed nothing more.
        if not statement.startswith("DELETE FROM push_wakeups") or outcome:
            return
        other = sqlite3.connect(path, timeout=0)
        try:
            other.execute(
                "UPDATE push_wakeups SET reason = 'bulk:1', due_at = ?, requests = requests + 1 "
                "WHERE device_id = ?", (datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), device))
            other.commit()
            outcome.append("written")
        except sqlite3.OperationalError as exc:  # the worker holds the write lock: it waits
            outcome.append(f"refused: {exc}")
        finally:
            other.close()

    event.listen(worker.engine.sync_engine, "before_cursor_execute", the_server_requests)
    try:
        async with worker.transaction() as session:
            taken = await store.take(session, datetime.now(UTC), 10, [Protocol.IOS.value],
                                     datetime.now(UTC))
    finally:
        event.remove(worker.engine.sync_engine, "before_cursor_execute", the_server_requests)
        await worker.close()
    assert taken.taken == 1 and not taken.due  # read as owed nothing more, and dropped
    assert len(outcome) == 1
    if immediate:
        assert outcome[0].startswith("refused") and "locked" in outcome[0]
    else:  # what the worker did before: the request landed between its read and its delete
        assert outcome == ["written"]
        async with db.session() as session:
            left = (await session.execute(text("SELECT count(*) FROM push_wakeups"))).scalar()
        assert left == 0  # ... and was deleted with the stale row: the wake-up lost


def test_the_worker_process_takes_the_write_lock_when_its_transactions_begin() -> None:
    import inspect

    from mdm.push import worker_process

    source = inspect.getsource(worker_process)
    assert "immediate=True" in source.split("db = Database(", 1)[1].split("\n", 1)[0]
