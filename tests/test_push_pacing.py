"""Re-push pacing (issue 12): background wake-ups (re-pushes of silent devices with queued
commands, the sweep's) go out at ``push.repush_per_second`` at most; the rest of a batch is
deferred to when the budget can send it, never dropped; first wake-ups are never held back."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from push_dispatch_support import Clock, ScriptedTransport, add_device, queue_command, set_device, wakeups

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import sweeps
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.pacing import RepushBudget
from mdm.push.tables import REPUSH

BATCH = 50
RATE = 10.0  # per second: the burst is one batch (50), larger than one second's budget


class Monotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def apns() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def mono() -> Monotonic:
    return Monotonic()


async def make(db: Database, apns: ScriptedTransport, clock: Clock, mono: Monotonic,
               rate: float) -> PushDispatcher:
    config = PushConfig(retry_seconds=60, retry_max_seconds=600, batch_size=BATCH, concurrency=8,
                        repush_per_second=rate, silent_after_hours=24)
    d = PushDispatcher(db, config, {Protocol.IOS: apns}, clock=clock, rng=random.Random(3))
    d.budget = RepushBudget(lambda: d.config.repush_per_second, lambda: d.config.batch_size, monotonic=mono)
    return d


@pytest.fixture
async def paced(db: Database, apns: ScriptedTransport, clock: Clock, mono: Monotonic
                ) -> AsyncIterator[PushDispatcher]:
    d = await make(db, apns, clock, mono, RATE)
    yield d
    await d.close()


async def silent_with_commands(db: Database, n: int) -> list[int]:
    ids = []
    for i in range(n):
        dev = await add_device(db, f"p{i}", token=f"t{i}")
        await queue_command(db, dev)
        ids.append(dev)
    return ids


async def drain(d: PushDispatcher) -> int:
    """dispatch_once until a batch takes nothing; the rows taken."""
    total = 0
    while n := await d.dispatch_once():
        total += n
    return total


async def test_a_repush_wave_goes_out_at_the_budget_and_the_rest_waits_its_turn(
    db: Database, paced: PushDispatcher, apns: ScriptedTransport, clock: Clock, mono: Monotonic
) -> None:
    ids = await silent_with_commands(db, 120)
    await paced.wake_many(ids, "command")
    await drain(paced)
    # First wake-ups are not paced: all 120 sent at once, each row kept as a re-push.
    assert len(apns.sent) == 120
    rows = await wakeups(db)
    assert {r.reason for r in rows.values()} == {REPUSH} and len(rows) == 120
    clock.now = max(r.due_at for r in rows.values()) + timedelta(seconds=1)
    start = clock.now

    assert await drain(paced) == 120
    # One burst (a batch: 50) sent; the other 70 deferred, in the order they were due, to when
    # the budget (10/s) can send them: 50 after 5 s, 20 more after 2 s; not counted as attempts.
    assert len(apns.sent) == 170
    rows = await wakeups(db)
    waiting = sorted((r.due_at - start).total_seconds() for r in rows.values() if r.attempts == 1)
    assert waiting == [5.0] * 50 + [7.0] * 20
    assert sum(1 for r in rows.values() if r.attempts == 2) == 50

    # A first wake-up meanwhile is not held back by the exhausted budget.
    new = await add_device(db, "fresh", token="fresh")
    await queue_command(db, new)
    await paced.wake(new, "command")
    await paced.dispatch_once()
    assert apns.tokens()[-1] == "fresh"

    # The deferred rows go out when they come due, as the budget refills.
    clock.now = start + timedelta(seconds=5)
    mono.t += 5
    await drain(paced)
    assert len(apns.sent) == 171 + 50
    clock.now = start + timedelta(seconds=7)
    mono.t += 2
    await drain(paced)
    assert len(apns.sent) == 171 + 70
    first_burst = {t.token for t in apns.sent[120:170]}
    assert {t.token for t in apns.sent[-70:]} == {f"t{i}" for i in range(120)} - first_burst


async def test_a_device_seen_while_deferred_is_not_pushed_again(
    db: Database, paced: PushDispatcher, apns: ScriptedTransport, clock: Clock, mono: Monotonic
) -> None:
    ids = await silent_with_commands(db, 60)
    await paced.wake_many(ids, "command")
    await drain(paced)
    rows = await wakeups(db)
    clock.now = max(r.due_at for r in rows.values()) + timedelta(seconds=1)
    await drain(paced)
    deferred = [d for d, r in (await wakeups(db)).items() if r.attempts == 1]
    assert len(deferred) == 10
    # They poll meanwhile (after the push that was sent): the deferred re-push is dropped.
    for dev in deferred:
        await set_device(db, dev, last_seen_at=clock.now)
    sent_before = len(apns.sent)
    clock.advance(60)
    mono.t += 60
    await drain(paced)
    left = await wakeups(db)
    assert len(apns.sent) == sent_before and not any(d in left for d in deferred)


async def test_the_sweeps_wakeups_are_paced_too(
    db: Database, paced: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    for i in range(60):
        await add_device(db, f"s{i}", token=f"s{i}", enrolled_at=clock.now - timedelta(days=3),
                         last_seen_at=clock.now - timedelta(days=2))
    assert await sweeps.sweep(paced) == 60
    await drain(paced)
    assert len(apns.sent) == BATCH
    assert len([r for r in (await wakeups(db)).values() if r.reason == "silent"]) == 10


async def test_zero_is_unpaced(db: Database, apns: ScriptedTransport, clock: Clock, mono: Monotonic) -> None:
    d = await make(db, apns, clock, mono, 0.0)
    try:
        ids = await silent_with_commands(db, 120)
        await d.wake_many(ids, "command")
        await drain(d)
        clock.now = max(r.due_at for r in (await wakeups(db)).values()) + timedelta(seconds=1)
        await drain(d)
        assert len(apns.sent) == 240
    finally:
        await d.close()
