"""The outbox delivery worker against a receiver behind the Transport seam (both engines): order
per device, exactly once after de-duplication through a crash between send and mark, backoff on
outages (never a refusal), refusals split down to the culprit and dead-lettered."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from reporting_support import Receiver, add_events, drain, pending_ids, rows, worker

from mdm.core.backoff import MAX_RETRY_AFTER, Backoff
from mdm.core.metrics import REGISTRY
from mdm.db.engine import Database
from mdm.reporting.seams import Outcome, SendResult

DEVICES = (11, 12, 13)


async def _seed_devices(db: Database) -> None:
    # Events name devices by id; the worker sends each with its device's record when it exists.
    from mdm.db.models import Device, Protocol

    async with db.transaction() as session:
        for d in DEVICES:
            session.add(Device(id=d, protocol=Protocol.KES.value, identifier=f"kes-{d}", name=f"phone {d}"))


async def test_order_per_device_and_exactly_once_through_a_crash(db: Database, tmp_path: Path) -> None:
    await _seed_devices(db)
    ids = await add_events(db, [(f"t{i}", DEVICES[i % 3]) for i in range(15)])
    receiver = Receiver()
    receiver.hang_on_send = 2  # the second batch arrives, then the process "dies" before the mark
    first = worker(db, receiver, tmp_path, batch_size=4)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(receiver.hanging.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pending_ids(db) == ids[4:]  # the first batch was marked, the second was not

    receiver.hang_on_send = None
    second = worker(db, receiver, tmp_path, batch_size=4)
    task = asyncio.create_task(second.run())
    for _ in range(200):
        if not await pending_ids(db):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    arrived = [e.id for e in receiver.arrivals]
    assert arrived == ids[:8] + ids[4:]  # the unmarked batch was sent again ...
    assert receiver.accepted_ids() == ids  # ... and is there once after de-duplication
    for device in DEVICES:
        first_arrivals = [e.id for e in receiver.accepted.values() if e.device_id == device]
        assert first_arrivals == sorted(first_arrivals) and len(first_arrivals) == 5
    enriched = receiver.arrivals[0].device
    assert enriched is not None and enriched.id == DEVICES[0] and enriched.protocol == "kes"
    assert enriched.name == "phone 11"
    stored = await rows(db)
    assert all(stored[i].delivered_at is not None for i in ids)
    assert all(stored[i].delivery_attempts == 0 and stored[i].dead_at is None for i in ids)


def test_backoff_grows_with_jitter_within_bounds_and_honours_retry_after() -> None:
    draws = []
    for seed in (1, 2):
        b = Backoff(1.0, 60.0, random.Random(seed))
        delays = [b.next_delay() for _ in range(40)]
        previous = 0.0
        for d in delays:
            assert 1.0 <= d <= 60.0
            assert d <= max(1.0, 3 * previous) + 1e-9  # decorrelated: at most three times the last
            previous = d
        assert max(delays) > 30  # it does grow to the cap's range
        assert sum(delays[:3]) < sum(delays[-3:])
        draws.append(delays)
    assert draws[0] != draws[1]  # jitter: two workers do not retry in step
    b = Backoff(1.0, 60.0, random.Random(3))
    assert b.next_delay(retry_after=120.0) == 120.0  # the receiver's pause wins over the cap
    assert b.next_delay(retry_after=1e9) == MAX_RETRY_AFTER
    b.reset()
    assert b.failures == 0 and b.next_delay() <= 3.0


async def test_an_outage_keeps_the_batch_backs_off_and_never_counts_as_a_refusal(
    db: Database, tmp_path: Path
) -> None:
    ids = await add_events(db, [("a", 1), ("b", 2)])
    receiver = Receiver()
    receiver.outages = [
        SendResult(Outcome.RETRY, "http_503", "Service Unavailable", retry_after=7.0),
        SendResult(Outcome.RETRY, "connect_error", "connection refused"),
    ]
    w = worker(db, receiver, tmp_path, backoff_initial_seconds=0.5, backoff_max_seconds=2.0)
    before = REGISTRY.get_sample_value("mdm_reporting_failures_total", {"reason": "http_503"}) or 0
    assert await w.step() >= 7.0  # Retry-After honoured
    second = await w.step()
    assert 0.5 <= second <= 2.0
    assert REGISTRY.get_sample_value("mdm_reporting_failures_total", {"reason": "http_503"}) == before + 1
    stored = await rows(db)
    assert [stored[i].delivery_attempts for i in ids] == [0, 0] and await pending_ids(db) == ids
    await w.step()
    assert receiver.accepted_ids() == ids and await pending_ids(db) == []


async def test_a_refused_batch_is_split_and_only_the_culprit_is_dead_lettered(
    db: Database, tmp_path: Path
) -> None:
    ids = await add_events(db, [(f"t{i}", 1 + i % 2) for i in range(8)])
    culprit = ids[5]
    stored = await rows(db)
    receiver = Receiver()
    receiver.refuse = {stored[culprit].uuid}
    w = worker(db, receiver, tmp_path, batch_size=8, dead_letter_after_attempts=3)
    await drain(w, db)
    stored = await rows(db)
    assert stored[culprit].dead_at is not None and stored[culprit].delivered_at is None
    assert stored[culprit].delivery_attempts == 3
    assert (stored[culprit].last_error or "").startswith("http_400: schema violation")
    others = [i for i in ids if i != culprit]
    assert receiver.accepted_ids() == others  # in id order
    assert all(stored[i].delivered_at is not None and stored[i].dead_at is None for i in others)
    # Nothing after the culprit was delivered before it was given up on: order among delivered
    # events holds.
    refusals = [n for n, (what, i) in enumerate(receiver.log) if what == "refused" and i == culprit]
    assert len(refusals) >= 3  # the receiver refuses each batch that holds it, split ones too
    later = [n for n, (what, i) in enumerate(receiver.log) if what == "ok" and i > culprit]
    assert later and min(later) > refusals[-1]
    # Split, not sent whole again and again: a handful of requests per refusal round.
    assert receiver.sends <= 3 * 4 + 2


async def test_named_refusals_deliver_the_rest_of_the_batch_at_once(db: Database, tmp_path: Path) -> None:
    ids = await add_events(db, [("a", 1), ("b", 1), ("c", 2)])
    stored = await rows(db)
    receiver = Receiver()
    receiver.refuse, receiver.named = {stored[ids[1]].uuid}, True
    w = worker(db, receiver, tmp_path, dead_letter_after_attempts=1)
    dead_before = REGISTRY.get_sample_value("mdm_reporting_dead_lettered_total", {"cause": "refused"}) or 0
    await w.step()
    assert receiver.sends == 1 and receiver.accepted_ids() == [ids[0], ids[2]]
    stored = await rows(db)
    assert stored[ids[1]].dead_at is not None and stored[ids[1]].last_error == "http_422: refused one by one"
    assert stored[ids[0]].delivered_at is not None and stored[ids[2]].delivered_at is not None
    dead_after = REGISTRY.get_sample_value("mdm_reporting_dead_lettered_total", {"cause": "refused"})
    assert dead_after == dead_before + 1
    assert await pending_ids(db) == []


async def test_a_wake_up_does_not_cut_the_backoff_short(db: Database, tmp_path: Path) -> None:
    """Wake-ups (dead letters replayed, new events) arrive during a ``Retry-After`` pause: the
    retry still waits the whole pause. Measured between the two sends, so a slow machine cannot
    make the test pass or fail by itself."""
    ids = await add_events(db, [("a", 1)])
    receiver = Receiver()
    receiver.outages = [SendResult(Outcome.RETRY, "http_429", "slow down", retry_after=1.0)]
    w = worker(db, receiver, tmp_path)
    task = asyncio.create_task(w.run())
    try:
        for _ in range(200):
            if receiver.sends:
                break
            await asyncio.sleep(0.01)
        assert receiver.sends == 1
        for _ in range(10):  # e.g. dead letters replayed meanwhile
            w.wake()
            await asyncio.sleep(0.05)
        for _ in range(300):
            if not await pending_ids(db):
                break
            await asyncio.sleep(0.02)
        assert receiver.sends == 2 and receiver.accepted_ids() == ids
        assert receiver.send_times[1] - receiver.send_times[0] >= 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
