"""The dispatcher's safety nets and its metrics: the recovery pass owes a wake-up to every device
with queued commands that has none (a crash between an enqueue's commit and its wake-up), the
sweep to every device silent for too long; the Prometheus series count what happened."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from push_dispatch_support import (
    Clock,
    ScriptedTransport,
    add_device,
    count_wakeups,
    queue_command,
    set_device,
    wakeups,
)

from mdm.core.metrics import REGISTRY
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import sweeps
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.types import Outcome, PushResult

CONFIG = PushConfig(retry_seconds=60, retry_max_seconds=600, batch_size=2, silent_after_hours=24)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def apns() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
async def dispatcher(db: Database, apns: ScriptedTransport, clock: Clock) -> AsyncIterator[PushDispatcher]:
    d = PushDispatcher(db, CONFIG, {Protocol.IOS: apns}, clock=clock, rng=random.Random(3))
    yield d
    await d.close()


async def test_recovery_owes_a_wake_up_for_queued_commands_in_bounded_passes(
    db: Database, dispatcher: PushDispatcher, clock: Clock
) -> None:
    waiting = [await add_device(db, f"w{i}", token=f"t{i}") for i in range(5)]
    for dev in waiting:
        await queue_command(db, dev)
    deferred = await add_device(db, "deferred", token="td")
    await queue_command(db, deferred, not_before=clock.now + timedelta(minutes=10))
    owed = await add_device(db, "owed", token="to")
    await queue_command(db, owed)
    await dispatcher.wake_at(owed, clock.now + timedelta(minutes=3), "notnow")
    idle = await add_device(db, "idle", token="ti")  # nothing queued
    invalid = await add_device(db, "invalid", token="x", valid=False)
    await queue_command(db, invalid)
    android = await add_device(db, "kes", token="f", protocol=Protocol.KES)  # no FCM transport
    await queue_command(db, android)

    assert await sweeps.recover(dispatcher) == 6  # batch_size 2: three passes and a last short one
    rows = await wakeups(db)
    assert set(rows) == {*waiting, deferred, owed}
    assert idle not in rows and invalid not in rows and android not in rows
    assert all(rows[d].due_at == clock.now and rows[d].reason == "recovery" for d in waiting)
    assert rows[deferred].due_at == clock.now + timedelta(minutes=10)  # when NotNow lets it through
    assert rows[owed].due_at == clock.now + timedelta(minutes=3) and rows[owed].reason == "notnow"
    assert await sweeps.recover(dispatcher) == 0  # idempotent


async def test_recovery_skips_commands_the_device_has_seen(
    db: Database, dispatcher: PushDispatcher, clock: Clock
) -> None:
    """A device that polled after its command was queued has it (or deferred it): no push. One
    whose NotNow back-off ends after its last poll is owed one at that time."""
    polled = await add_device(db, "polled", token="p")
    await queue_command(db, polled)
    await set_device(db, polled, last_seen_at=clock.now + timedelta(seconds=5))
    deferred = await add_device(db, "deferred", token="d", last_seen_at=clock.now + timedelta(seconds=5))
    await queue_command(db, deferred, not_before=clock.now + timedelta(minutes=4))
    stale = await add_device(db, "stale", token="s", last_seen_at=clock.now - timedelta(hours=1))
    await queue_command(db, stale)
    assert await sweeps.recover(dispatcher) == 2
    rows = await wakeups(db)
    assert set(rows) == {deferred, stale}
    assert rows[deferred].due_at == clock.now + timedelta(minutes=4)


async def test_sweep_wakes_devices_silent_for_too_long(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    day = timedelta(hours=24)
    two_days_ago = clock.now - 2 * day
    silent = [await add_device(db, f"s{i}", token=f"s{i}", last_seen_at=two_days_ago) for i in range(3)]
    never_seen = await add_device(db, "never", token="n", enrolled_at=clock.now - 3 * day)
    recent = await add_device(db, "recent", token="r", last_seen_at=clock.now - timedelta(hours=1))
    new = await add_device(db, "new", token="new", enrolled_at=clock.now - timedelta(hours=2))
    invalid = await add_device(db, "invalid", token="x", valid=False, last_seen_at=clock.now - 5 * day)
    no_token = await add_device(db, "none", token=None, valid=False, last_seen_at=clock.now - 5 * day)

    assert await sweeps.sweep(dispatcher) == 4
    rows = await wakeups(db)
    assert set(rows) == {*silent, never_seen}
    assert not {recent, new, invalid, no_token} & set(rows)
    while await dispatcher.dispatch_once():
        pass
    assert sorted(apns.tokens()) == ["n", "s0", "s1", "s2"]
    assert await count_wakeups(db) == 0  # no queued command: one push each


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_sent_failed_latency_and_owed(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport
) -> None:
    sent0 = _value("mdm_push_sent_total", service="apns")
    bad0 = _value("mdm_push_failed_total", service="apns", reason="BadDeviceToken")
    busy0 = _value("mdm_push_failed_total", service="apns", reason="TooManyRequests")
    latency0 = _value("mdm_push_latency_seconds_count", service="apns")
    ok = [await add_device(db, f"ok{i}", token=f"ok{i}") for i in range(3)]
    bad = await add_device(db, "bad", token="bad")
    busy = await add_device(db, "busy", token="busy")
    apns.answer("bad", PushResult(Outcome.INVALID_TOKEN, reason="BadDeviceToken", status=400))
    apns.answer("busy", PushResult(Outcome.RETRY, reason="TooManyRequests", status=429))
    await dispatcher.wake_many([*ok, bad, busy], "command")
    assert await dispatcher.counts() == (5, 0)
    assert _value("mdm_push_owed") == 5
    while await dispatcher.dispatch_once():
        pass
    assert _value("mdm_push_sent_total", service="apns") - sent0 == 3
    assert _value("mdm_push_failed_total", service="apns", reason="BadDeviceToken") - bad0 == 1
    assert _value("mdm_push_failed_total", service="apns", reason="TooManyRequests") - busy0 == 1
    assert _value("mdm_push_latency_seconds_count", service="apns") - latency0 == 5
    assert await dispatcher.counts() == (1, 1)  # busy is owed; bad's token is invalid
    assert _value("mdm_push_owed") == 1
    stats = dispatcher.stats["apns"]
    assert stats.configured and stats.sent == 3 and stats.last_success_at is not None
    assert stats.failures == {"BadDeviceToken": 1, "TooManyRequests": 1}
    assert dispatcher.stats["fcm"].configured is False


async def test_recovery_owes_a_page_in_chunks(
    db: Database, clock: Clock, apns: ScriptedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of candidates is owed in chunks of rows (a large push.batch_size would bind more
    parameters than the drivers take in one statement)."""
    from mdm.push import store

    monkeypatch.setattr(store, "IN_CHUNK", 2)
    waiting = [await add_device(db, f"c{i}", token=f"c{i}") for i in range(7)]
    for dev in waiting:
        await queue_command(db, dev)
    d = PushDispatcher(db, PushConfig(batch_size=5), {Protocol.IOS: apns}, clock=clock, rng=random.Random(3))
    try:
        assert await sweeps.recover(d) == 7  # a page of 5 (chunks 2, 2, 1), then a page of 2
    finally:
        await d.close()
    rows = await wakeups(db)
    assert set(rows) == set(waiting) and all(rows[i].reason == "recovery" for i in waiting)
