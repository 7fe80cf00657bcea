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
from push_dispatch_support import ScriptedTransport, add_device
from sqlalchemy import event, text

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import store, store_take
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
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


async def test_sqlite_reads_the_due_rows_outside_its_write_lock_and_claims_only_unchanged_rows(
    db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dispatcher's take on SQLite reads without the write lock (the server's writes need not
    wait for its SELECT), then claims in a short write transaction only the rows whose
    ``requests`` is still as read: a request in between is neither deleted with a stale row nor
    leased with what was read; the next take sends it, once."""
    if not db.is_sqlite:
        pytest.skip("SQLite's take; PostgreSQL's take locks its rows (FOR UPDATE SKIP LOCKED)")
    stale = await add_device(db, "stale", token="t-stale")
    owed = await add_device(db, "owed", token="t-owed")
    await _stale_repush(db, stale)  # read as owed nothing more (nothing queued)
    transport = ScriptedTransport()
    worker = Database(db.url, immediate=True)
    dispatcher = PushDispatcher(worker, PushConfig(batch_size=10), {Protocol.IOS: transport},
                                inline_writes=True)
    await dispatcher.wake(owed, "command")  # read as owed: to be leased
    path = db.url.split("///", 1)[1].split("?", 1)[0]
    claim = store_take.claim
    requested: list[bool] = []

    async def the_server_requests_first(*args: Any, **kwargs: Any) -> Any:
        if not requested:  # between the take's read and its claim, the server asks again for both
            # (as ``store.request`` does to a row already due: the earlier due time stays)
            other = sqlite3.connect(path, timeout=5)
            try:
                other.execute("UPDATE push_wakeups SET reason = 'bulk:1', requests = requests + 1, "
                              "attempts = CASE WHEN reason = 'repush' THEN 0 ELSE attempts END")
                other.commit()
            finally:
                other.close()
            requested.append(True)
        return await claim(*args, **kwargs)

    monkeypatch.setattr(store_take, "claim", the_server_requests_first)
    try:
        assert await dispatcher.dispatch_once() == 0  # both read, neither claimed ...
        assert requested and transport.sent == []  # ... nor sent
        async with db.session() as session:
            rows = (await session.execute(text(
                "SELECT device_id, reason, requests, attempts FROM push_wakeups ORDER BY device_id"))).all()
        assert [tuple(r) for r in rows] == [(stale, "bulk:1", 2, 0), (owed, "bulk:1", 2, 0)]
        assert await dispatcher.dispatch_once() == 2  # the next take sends both, once each
        assert sorted(transport.tokens()) == ["t-owed", "t-stale"]
    finally:
        await dispatcher.close()
        await worker.close()
