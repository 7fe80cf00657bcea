"""Aggregated and bounded events: push failures per service and reason per interval (never one
per failed push), bulk progress at 25/50/75 % only, and one-time tokens presented again (a used
SCEP challenge, a downloaded enrollment link) reported once per token per interval."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from bulk_support import add_devices
from push_dispatch_support import Clock, ScriptedTransport, add_device
from sqlalchemy import select

from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import Event, Protocol
from mdm.ios.commands import IosCommandTranslator
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.types import Outcome, PushResult
from mdm.scep.token_reuse import ReuseReports, report

CONFIG = PushConfig(retry_seconds=60, retry_max_seconds=600, batch_size=50, concurrency=8)


async def events_of(db: Database, type_: str) -> list[Event]:
    async with db.session() as session:
        stmt = select(Event).where(Event.type == type_).order_by(Event.id)
        return list((await session.scalars(stmt)).all())


async def test_push_failures_are_one_event_per_reason_and_interval(db: Database) -> None:
    clock = Clock()
    apns = ScriptedTransport()
    dispatcher = PushDispatcher(db, CONFIG, {Protocol.IOS: apns}, clock=clock, rng=random.Random(7))
    busy = PushResult(Outcome.RETRY, reason="TooManyRequests", status=429)
    devices = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(6)]
    for i in range(4):
        apns.answer(f"t{i}", busy)
    apns.answer("t0", busy)  # its second push fails alike
    apns.answer("t4", PushResult(Outcome.REJECTED, reason="PayloadTooLarge", status=413))
    apns.answer("t5", ConnectionResetError("reset"))
    try:
        await dispatcher.wake_many(devices, "command")
        await dispatcher.dispatch_once()
        assert await events_of(db, "push_failures_aggregated") == []  # the interval has not ended
        dispatcher.failures.interval_seconds = 0.0
        await dispatcher.wake(devices[0], "command")
        clock.advance(3600)
        await dispatcher.dispatch_once()  # t0 fails again: counted in the same interval
    finally:
        await dispatcher.close()
    reports = await events_of(db, "push_failures_aggregated")
    bodies = {(e.body["service"], e.body["reason"], e.body["outcome"]): e.body["count"] for e in reports}
    assert bodies == {
        ("apns", "TooManyRequests", "retry"): 5,
        ("apns", "PayloadTooLarge", "rejected"): 1,
        ("apns", "error:ConnectionResetError", "retry"): 1,
    }
    assert all(e.severity == "warning" and e.device_id is None for e in reports)
    assert all(e.body["since"] <= e.body["until"] for e in reports)


class Recorder:
    async def wake(self, device_id: int, reason: str) -> None:
        pass

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        pass

    async def wake_at(self, device_id: int, due: object, reason: str) -> None:
        pass


@pytest.mark.parametrize(("devices", "batch", "expected"), [
    (30, 7, [(25, 14), (50, 21), (75, 28)]),  # 7, 14, 21, 28, 30: each step once
    (10, 3, [(25, 3), (50, 6), (75, 9)]),
    (100, 60, [(50, 60)]),  # one batch crosses 25 and 50: one event, the highest step
    (5, 50, []),  # done in one batch: the end is bulk_command_queued
])
async def test_bulk_progress_is_reported_at_quarter_steps_only(
    db: Database, devices: int, batch: int, expected: list[tuple[int, int]]
) -> None:
    await add_devices(db, devices)
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    pushers = Pushers()
    pushers.register(Protocol.IOS, Recorder())
    svc = BulkService(db, translators, pushers, batch_size=batch)
    op = await svc.create("Block", {"message": "lost"}, by="alice")
    while await svc.step(op.id):
        pass
    progress = await events_of(db, "bulk_operation_progress")
    assert [(e.body["percent"], e.body["processed"]) for e in progress] == expected
    assert all(e.body["targeted"] == devices and e.body["bulk"] == op.id for e in progress)
    kinds = [e.type for e in await events_of_any(db)]
    assert kinds[-1] == "bulk_command_queued"


async def events_of_any(db: Database) -> list[Event]:
    async with db.session() as session:
        return list((await session.scalars(select(Event).order_by(Event.id))).all())


async def test_a_reused_token_is_reported_once_per_interval(db: Database) -> None:
    reports = ReuseReports(ttl=3600)
    for _ in range(50):  # a client replaying a used challenge in a loop
        await report(db, reports, ("scep", 7), kind="scep_challenge", challenge=7, transaction_id="T1")
    await report(db, reports, ("scep", 8), kind="scep_challenge", challenge=8, transaction_id="T2")
    found = await events_of(db, "security_token_reused")
    assert [e.body for e in found] == [
        {"kind": "scep_challenge", "challenge": 7, "transaction_id": "T1"},
        {"kind": "scep_challenge", "challenge": 8, "transaction_id": "T2"},
    ]
    assert all(e.severity == "warning" for e in found)
    small = ReuseReports(maxsize=2, ttl=3600)  # memory is bounded: the oldest are forgotten
    for key in range(10):
        small.first(key)
    assert len(small._seen) == 2


async def test_push_failures_before_a_quiet_spell_are_reported_by_the_idle_worker(db: Database) -> None:
    apns = ScriptedTransport()
    dispatcher = PushDispatcher(db, CONFIG, {Protocol.IOS: apns}, idle_seconds=0.05)
    gone = PushResult(Outcome.REJECTED, reason="PayloadTooLarge", status=413)
    devices = [await add_device(db, f"q{i}", token=f"q{i}") for i in range(3)]
    for i in range(3):
        apns.answer(f"q{i}", gone)  # finished for good: no later batch would report them
    worker = asyncio.create_task(dispatcher.run())
    try:
        await dispatcher.wake_many(devices, "command")
        dispatcher.nudge()
        async with asyncio.timeout(10):
            while len(apns.sent) < 3 or dispatcher.in_flight:
                await asyncio.sleep(0.02)
        assert await events_of(db, "push_failures_aggregated") == []
        dispatcher.failures.interval_seconds = 0.0  # the interval ends with no push pending
        async with asyncio.timeout(10):
            while not (found := await events_of(db, "push_failures_aggregated")):
                await asyncio.sleep(0.05)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await dispatcher.close()
    assert [(e.body["reason"], e.body["outcome"], e.body["count"]) for e in found] == [
        ("PayloadTooLarge", "rejected", 3)
    ]
