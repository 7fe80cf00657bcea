"""The dispatcher at fleet scale: while one batch waits for the gateway's answers, the worker takes
the next batches (up to ``PIPELINE`` in flight, ``push.concurrency`` pushes at once across them),
so a slow gateway round trip does not idle the database side and vice versa; every row is still
sent once and answered once; a failing batch does not stop the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from push_dispatch_support import SENT, add_device, count_wakeups

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import dispatcher as dispatcher_module
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.types import PushResult, WakeTarget


class GatedTransport:
    """Answers SENT, but only once the gate opens; counts the pushes waiting at the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0
        self.sent: list[str] = []

    async def send(self, target: WakeTarget) -> PushResult:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        await self.gate.wait()
        self.waiting -= 1
        self.sent.append(target.token)
        return SENT

    async def close(self) -> None:
        pass


@pytest.fixture
async def gated(db: Database) -> AsyncIterator[tuple[PushDispatcher, GatedTransport]]:
    transport = GatedTransport()
    d = PushDispatcher(db, PushConfig(batch_size=10, concurrency=100), {Protocol.IOS: transport})
    yield d, transport
    await d.close()


async def _run_until(condition: object, worker: asyncio.Task[None], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            if worker.done():
                worker.result()
            await asyncio.sleep(0.01)


async def test_the_next_batches_are_taken_while_the_gateway_answers(
    db: Database, gated: tuple[PushDispatcher, GatedTransport]
) -> None:
    dispatcher, transport = gated
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(40)]
    await dispatcher.wake_many(ids, "bulk:1")
    worker = asyncio.create_task(dispatcher.run())
    try:
        # Three batches of 10 in flight at once (PIPELINE), all waiting for the gateway; the
        # fourth is taken only when one of them is answered.
        await _run_until(lambda: transport.waiting == 10 * dispatcher_module.PIPELINE, worker)
        await asyncio.sleep(0.1)
        assert transport.waiting == 10 * dispatcher_module.PIPELINE
        transport.gate.set()
        await _run_until(lambda: len(transport.sent) == 40, worker)
        await _run_until(lambda: not dispatcher.in_flight, worker)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    assert sorted(transport.sent) == sorted(f"t{i}" for i in range(40))  # each once
    assert await count_wakeups(db) == 0  # every answer applied


async def test_pushes_in_flight_stay_within_the_concurrency_across_batches(
    db: Database, gated: tuple[PushDispatcher, GatedTransport]
) -> None:
    dispatcher, transport = gated
    dispatcher.config = PushConfig(batch_size=10, concurrency=15)
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(30)]
    await dispatcher.wake_many(ids, "bulk:1")
    worker = asyncio.create_task(dispatcher.run())
    try:
        await _run_until(lambda: transport.waiting == 15, worker)
        await asyncio.sleep(0.1)
        assert transport.most_waiting == 15
        transport.gate.set()
        await _run_until(lambda: len(transport.sent) == 30, worker)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker


async def test_a_batch_whose_answers_cannot_be_recorded_does_not_stop_the_worker(
    db: Database, gated: tuple[PushDispatcher, GatedTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher, transport = gated
    transport.gate.set()
    real_apply = dispatcher._apply
    failures = []

    async def flaky_apply(answered: list[tuple[object, PushResult]]) -> None:
        if not failures:
            failures.append(len(answered))
            raise RuntimeError("database is away")
        await real_apply(answered)  # type: ignore[arg-type]

    monkeypatch.setattr(dispatcher, "_apply", flaky_apply)
    first = [await add_device(db, f"a{i}", token=f"a{i}") for i in range(10)]
    await dispatcher.wake_many(first, "bulk:1")
    worker = asyncio.create_task(dispatcher.run())
    try:
        await _run_until(lambda: failures and len(transport.sent) == 10, worker)
        later = [await add_device(db, f"b{i}", token=f"b{i}") for i in range(5)]
        await dispatcher.wake_many(later, "bulk:2")
        await _run_until(lambda: len(transport.sent) == 15 and not dispatcher.in_flight, worker)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    # The failed batch stays leased (sent again when its lease ends); the next one was recorded.
    assert await count_wakeups(db) == 10


async def test_a_batch_of_repushes_is_rescheduled_together_within_the_jitter(db: Database) -> None:
    from push_dispatch_support import ScriptedTransport, queue_command, wakeups
    from sqlalchemy import event

    from mdm.push.tables import REPUSH

    config = PushConfig(batch_size=200, concurrency=50, retry_seconds=60, retry_max_seconds=600)
    dispatcher = PushDispatcher(db, config, {Protocol.IOS: ScriptedTransport()})
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(120)]
    for device_id in ids:
        await queue_command(db, device_id)  # still queued after the push: re-pushed later
    await dispatcher.wake_many(ids, "bulk:1")
    writes: list[tuple[str, bool]] = []

    def seen(conn: object, cursor: object, statement: str, params: object, context: object,
             executemany: bool) -> None:
        writing = ("UPDATE push_wakeups", "DELETE FROM push_wakeups", "WITH locked", "WITH gone")
        if statement.startswith(writing):
            writes.append((" ".join(statement.split()[:3]).removesuffix(" SET"), executemany))

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await dispatcher.dispatch_once() == 120
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
        await dispatcher.close()
    rows = await wakeups(db)
    assert len(rows) == 120 and {r.reason for r in rows.values()} == {REPUSH}
    dues = {r.due_at for r in rows.values()}
    assert len(dues) == 1  # one due time for the batch...
    started = min(r.last_attempt_at for r in rows.values() if r.last_attempt_at)
    assert all(51 <= (due - started).total_seconds() <= 70 for due in dues)  # ...within the jitter
    # the lease at take, then the accepted pushes: rows without commands deleted, the others
    # rescheduled; three statements, none of them per row (on PostgreSQL two: the take leases in
    # its own statement, ``store_pg``, and the accepted pushes are one statement)
    if db.is_sqlite:
        assert writes == [("UPDATE push_wakeups", False), ("DELETE FROM push_wakeups", False),
                          ("UPDATE push_wakeups", False)]
    else:
        assert writes == [("WITH locked AS", False), ("WITH gone AS", False)]
