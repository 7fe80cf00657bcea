"""The push dispatcher: owed wake-ups are persisted and coalesced, sent once per due row, and each
transport outcome has its effect (re-push while commands wait and the device is silent, invalid
tokens never pushed again, retries with back-off, one alert per circuit opening)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from push_dispatch_support import (
    Clock,
    ScriptedTransport,
    add_device,
    clear_queue,
    count_wakeups,
    device,
    events_of,
    queue_command,
    set_device,
    wakeups,
)
from sqlalchemy import update

from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, Protocol
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.event_types import PUSH_CREDENTIALS_REFUSED, PUSH_TOKEN_INVALID
from mdm.push.tables import REPUSH
from mdm.push.types import Outcome, PushResult

CONFIG = PushConfig(retry_seconds=60, retry_max_seconds=600, batch_size=50, concurrency=8)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def apns() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
async def dispatcher(db: Database, apns: ScriptedTransport, clock: Clock) -> AsyncIterator[PushDispatcher]:
    d = PushDispatcher(db, CONFIG, {Protocol.IOS: apns}, clock=clock, rng=random.Random(7))
    yield d
    await d.close()


async def test_wakes_for_one_device_coalesce_into_one_row_with_the_earliest_due(
    db: Database, dispatcher: PushDispatcher, clock: Clock
) -> None:
    dev = await add_device(db, "d1")
    await dispatcher.wake_at(dev, clock.now + timedelta(seconds=60), "notnow")
    await dispatcher.wake_at(dev, clock.now + timedelta(seconds=30), "notnow")
    await dispatcher.wake_at(dev, clock.now + timedelta(seconds=90), "later")
    rows = await wakeups(db)
    assert list(rows) == [dev]
    assert rows[dev].due_at == clock.now + timedelta(seconds=30)
    assert rows[dev].requests == 3 and rows[dev].reason == "notnow"
    assert await dispatcher.dispatch_once() == 0  # not due yet
    clock.advance(30)
    assert await dispatcher.dispatch_once() == 1


async def test_a_wake_is_persisted_sent_once_and_then_done(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock, config: object
) -> None:
    dev = await add_device(db, "d1", token="aa11")
    await dispatcher.wake(dev, "command")
    # Another connection (a restarted process) sees the owed wake-up.
    other = Database(db.url)
    try:
        assert list(await wakeups(other)) == [dev]
        restarted = PushDispatcher(other, CONFIG, {Protocol.IOS: apns}, clock=clock)
        assert await restarted.dispatch_once() == 1
    finally:
        await other.close()
    assert [(t.device_id, t.token, t.push_magic) for t in apns.sent] == [(dev, "aa11", "magic-d1")]
    assert await count_wakeups(db) == 0  # no queued command: nothing more is owed
    clock.advance(3600)
    assert await dispatcher.dispatch_once() == 0
    assert len(apns.sent) == 1


async def test_bulk_wake_is_set_based_and_skips_devices_that_cannot_be_pushed(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport
) -> None:
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(1205)]
    no_token = await add_device(db, "none", token=None, valid=False)
    invalid = await add_device(db, "bad", token="old", valid=False)
    android = await add_device(db, "kes", token="fcm", protocol=Protocol.KES)  # no FCM transport
    await dispatcher.wake_many([*ids, no_token, invalid, android, ids[0]], "bulk")
    rows = await wakeups(db)
    assert set(rows) == set(ids)
    taken = 0
    while n := await dispatcher.dispatch_once():
        taken += n
    assert taken == len(ids)
    assert sorted(apns.tokens()) == sorted(f"t{i}" for i in range(1205))


async def test_concurrent_workers_send_each_due_row_once(
    db: Database, apns: ScriptedTransport, clock: Clock
) -> None:
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(120)]
    workers = [PushDispatcher(db, CONFIG, {Protocol.IOS: apns}, clock=clock) for _ in range(3)]
    await workers[0].wake_many(ids, "bulk")

    async def drain(d: PushDispatcher) -> int:
        total = 0
        while n := await d.dispatch_once():
            total += n
        return total

    assert sum(await asyncio.gather(*(drain(d) for d in workers))) == 120
    assert sorted(apns.tokens()) == sorted(f"t{i}" for i in range(120))


async def test_an_invalid_token_is_marked_and_never_pushed_until_a_new_one_arrives(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    dev = await add_device(db, "d1", token="dead")
    await queue_command(db, dev)
    apns.answer("dead", PushResult(Outcome.INVALID_TOKEN, reason="BadDeviceToken", status=400))
    await dispatcher.wake(dev, "command")
    await dispatcher.dispatch_once()
    assert (await device(db, dev)).push_valid is False
    assert await count_wakeups(db) == 0
    [event] = await events_of(db, PUSH_TOKEN_INVALID.name)
    assert event.device_id == dev
    assert event.body == {"service": "apns", "reason": "BadDeviceToken", "status": 400}
    # Not pushed again: a wake, the recovery pass and the sweep all skip it.
    await dispatcher.wake(dev, "command")
    clock.advance(7 * 24 * 3600)
    assert await count_wakeups(db) == 0 and await dispatcher.dispatch_once() == 0
    assert apns.tokens() == ["dead"]
    # A TokenUpdate with a new token makes it pushable again.
    await set_device(db, dev, push_token="fresh", push_valid=True)
    await dispatcher.wake(dev, "command")
    await dispatcher.dispatch_once()
    assert apns.tokens() == ["dead", "fresh"]


async def test_a_token_replaced_during_the_send_is_not_invalidated(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport
) -> None:
    dev = await add_device(db, "d1", token="old")
    apns.answer("old", PushResult(Outcome.INVALID_TOKEN, reason="Unregistered", status=410))
    await dispatcher.wake(dev, "command")
    real_send = apns.send

    async def send_then_token_update(target, *, expires=None):  # type: ignore[no-untyped-def]
        result = await real_send(target, expires=expires)
        await set_device(db, dev, push_token="new", push_valid=True)
        return result

    apns.send = send_then_token_update  # type: ignore[method-assign]
    await dispatcher.dispatch_once()
    assert (await device(db, dev)).push_valid is True
    assert await events_of(db, PUSH_TOKEN_INVALID.name) == []
    apns.send = real_send  # type: ignore[method-assign]
    await dispatcher.dispatch_once()  # the new token is pushed at once
    assert apns.tokens() == ["old", "new"]


async def test_retry_honours_retry_after_and_backs_off(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    dev = await add_device(db, "d1", token="busy")
    apns.answer("busy", PushResult(Outcome.RETRY, reason="TooManyRequests", status=429, retry_after=900),
                PushResult(Outcome.RETRY, reason="InternalServerError", status=500))
    await dispatcher.wake(dev, "command")
    start = clock.now
    await dispatcher.dispatch_once()
    row = (await wakeups(db))[dev]
    assert row.attempts == 1 and row.last_result == "retry:TooManyRequests"
    assert row.due_at >= start + timedelta(seconds=900)  # Retry-After wins over the 60 s back-off
    clock.now = row.due_at
    await dispatcher.dispatch_once()
    row = (await wakeups(db))[dev]
    # 2nd attempt: 60 * 2 = 120 s, jittered by at most 15 %.
    delay = (row.due_at - clock.now).total_seconds()
    assert row.attempts == 2 and 102 <= delay <= 138
    clock.now = row.due_at
    await dispatcher.dispatch_once()
    assert await count_wakeups(db) == 0 and apns.tokens() == ["busy"] * 3


async def test_a_transport_that_raises_is_a_retry(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    dev = await add_device(db, "d1", token="boom")
    apns.answer("boom", ConnectionResetError("stream reset"))
    await dispatcher.wake(dev, "command")
    await dispatcher.dispatch_once()
    row = (await wakeups(db))[dev]
    assert row.last_result == "retry:error:ConnectionResetError"
    assert row.due_at > clock.now
    clock.now = row.due_at
    await dispatcher.dispatch_once()
    assert await count_wakeups(db) == 0 and len(apns.sent) == 2


async def test_refused_credentials_alert_once_per_opening_and_keep_the_rows(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(3)]
    apns.default = PushResult(Outcome.CREDENTIALS, reason="BadCertificate", status=403)
    await dispatcher.wake_many(ids, "command")
    await dispatcher.dispatch_once()
    assert dispatcher.stats["apns"].circuit_open is True
    refused = await events_of(db, PUSH_CREDENTIALS_REFUSED.name)
    assert [e.body["reason"] for e in refused] == ["BadCertificate"]
    assert set(await wakeups(db)) == set(ids)
    # Still refused later (the transport's circuit answers UNAVAILABLE or CREDENTIALS): no new alert.
    clock.advance(600)
    apns.default = PushResult(Outcome.UNAVAILABLE, reason="circuit open")
    await dispatcher.dispatch_once()
    assert len(await events_of(db, PUSH_CREDENTIALS_REFUSED.name)) == 1
    assert set(await wakeups(db)) == set(ids)
    # The certificate is replaced: the held rows are due now and sent, the circuit closes.
    apns.default = PushResult(Outcome.SENT)
    assert await dispatcher.resume(Protocol.IOS) == 3
    await dispatcher.dispatch_once()
    assert await count_wakeups(db) == 0
    assert dispatcher.stats["apns"].circuit_open is False
    # A new opening alerts again.
    apns.default = PushResult(Outcome.CREDENTIALS, reason="Forbidden", status=403)
    await dispatcher.wake(ids[0], "command")
    await dispatcher.dispatch_once()
    assert len(await events_of(db, PUSH_CREDENTIALS_REFUSED.name)) == 2


async def test_rejected_is_dropped_and_unavailable_is_kept(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    bad = await add_device(db, "d1", token="bad")
    held = await add_device(db, "d2", token="held")
    apns.answer("bad", PushResult(Outcome.REJECTED, reason="BadTopic", status=400))
    apns.answer("held", PushResult(Outcome.UNAVAILABLE, reason="not configured"))
    await dispatcher.wake_many([bad, held], "command")
    await dispatcher.dispatch_once()
    rows = await wakeups(db)
    assert list(rows) == [held] and rows[held].due_at > clock.now
    assert await events_of(db, PUSH_TOKEN_INVALID.name) == []
    clock.now = rows[held].due_at
    await dispatcher.dispatch_once()
    assert await count_wakeups(db) == 0 and apns.tokens().count("bad") == 1


async def test_repushed_while_commands_wait_and_the_device_is_silent_until_it_polls(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    dev = await add_device(db, "d1", token="t")
    await queue_command(db, dev)
    await dispatcher.wake(dev, "command")
    await dispatcher.dispatch_once()
    row = (await wakeups(db))[dev]
    assert row.reason == REPUSH and 51 <= (row.due_at - clock.now).total_seconds() <= 69
    clock.now = row.due_at
    await dispatcher.dispatch_once()
    row = (await wakeups(db))[dev]
    assert len(apns.sent) == 2 and 102 <= (row.due_at - clock.now).total_seconds() <= 138  # doubled
    # The device polls after the push: nothing more is pushed, the row goes.
    await set_device(db, dev, last_seen_at=clock.advance(5))
    clock.now = row.due_at
    assert await dispatcher.dispatch_once() == 1
    assert len(apns.sent) == 2 and await count_wakeups(db) == 0


async def test_repush_stops_when_the_queue_empties_and_a_new_command_starts_over(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    dev = await add_device(db, "d1", token="t")
    await queue_command(db, dev)
    await dispatcher.wake(dev, "command")
    await dispatcher.dispatch_once()
    await clear_queue(db, dev)
    clock.now = (await wakeups(db))[dev].due_at
    await dispatcher.dispatch_once()
    assert len(apns.sent) == 1 and await count_wakeups(db) == 0
    # The re-push back-off is capped at retry_max_seconds.
    assert dispatcher.backoff(1) == 60 and dispatcher.backoff(4) == 480 and dispatcher.backoff(30) == 600


async def test_a_request_during_the_send_is_not_lost(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport
) -> None:
    """The device polled before a new command was queued: the finished push must not swallow
    the wake-up asked for the new command while it was in flight."""
    dev = await add_device(db, "d1", token="t")
    await dispatcher.wake(dev, "command")
    real_send = apns.send

    async def send_and_enqueue(target, *, expires=None):  # type: ignore[no-untyped-def]
        result = await real_send(target, expires=expires)
        await dispatcher.wake(dev, "command")
        return result

    apns.send = send_and_enqueue  # type: ignore[method-assign]
    await dispatcher.dispatch_once()
    apns.send = real_send  # type: ignore[method-assign]
    assert list(await wakeups(db)) == [dev]
    assert await dispatcher.dispatch_once() == 1 and len(apns.sent) == 2
    assert await count_wakeups(db) == 0


async def test_the_worker_runs_when_nudged(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport
) -> None:
    dev = await add_device(db, "d1", token="t")
    dispatcher.idle_seconds = 3600  # only a nudge can wake it in time
    worker = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.05)
        await dispatcher.wake(dev, "command")
        await asyncio.wait_for(apns.got.wait(), 10)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    assert apns.tokens() == ["t"]


async def test_a_command_deferred_by_notnow_keeps_no_repush_going(
    db: Database, dispatcher: PushDispatcher, apns: ScriptedTransport, clock: Clock
) -> None:
    """Only commands the device may fetch now keep a re-push owed: at the answer (a sent push)
    and at the take (a re-push whose command was deferred meanwhile)."""
    deferred = await add_device(db, "d1", token="t1")
    await queue_command(db, deferred, not_before=clock.now + timedelta(hours=1))
    later = await add_device(db, "d2", token="t2")
    await queue_command(db, later)
    await dispatcher.wake_many([deferred, later], "command")
    assert await dispatcher.dispatch_once() == 2
    assert list(await wakeups(db)) == [later]  # the deferred device's row is done
    async with db.transaction() as session:  # the device answered NotNow meanwhile
        await session.execute(update(CommandQueueEntry).where(CommandQueueEntry.device_id == later)
                              .values(not_before=clock.now + timedelta(hours=1)))
    clock.now = (await wakeups(db))[later].due_at
    assert await dispatcher.dispatch_once() == 1  # taken and dropped, not pushed again
    assert apns.tokens() == ["t1", "t2"] and await count_wakeups(db) == 0
