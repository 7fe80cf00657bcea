"""A wake-up sent alone (issue 12: with APNs configured, every single command's) costs the server
as little as the engine allows. On PostgreSQL the take and an all-accepted batch's record run on a
kept autocommit connection, never through an ORM session and a pool checkout (~1.2 ms of CPU per
wake-up that way); and under load the worker does not look up the next due time when it was
asked again during its take."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from push_dispatch_support import Clock, ScriptedTransport, add_device, queue_command
from sqlalchemy import event, select

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.tables import REPUSH, PushWakeup
from mdm.push.types import Outcome, PushResult


def _checkouts(db: Database) -> list[int]:
    seen: list[int] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *_: seen.append(1))
    return seen


async def _rows(db: Database) -> dict[int, Any]:
    async with db.session() as session:
        return {r.device_id: r for r in (await session.scalars(select(PushWakeup))).all()}


async def test_postgresql_takes_and_records_an_accepted_batch_without_a_pool_checkout(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("autocommit connections are PostgreSQL's (SQLite's take: test_push_take_atomic)")
    clock = Clock()
    transport = ScriptedTransport()
    dispatcher = PushDispatcher(db, PushConfig(batch_size=10, retry_seconds=60), {Protocol.IOS: transport},
                                clock=clock)
    quiet = await add_device(db, "quiet", token="t-quiet")
    waiting = await add_device(db, "waiting", token="t-waiting")
    await queue_command(db, waiting)  # a command to fetch: kept as a re-push after the push
    warm = await add_device(db, "warm", token="t-warm")
    await dispatcher.wake(warm, "command")
    assert await dispatcher.dispatch_once() == 1  # (the kept connection opened, statements prepared)
    await dispatcher.wake_many([quiet, waiting], "command")
    checkouts = _checkouts(db)
    assert await dispatcher.dispatch_once() == 2
    assert checkouts == []
    assert sorted(transport.tokens()) == ["t-quiet", "t-waiting", "t-warm"]
    rows = await _rows(db)
    assert quiet not in rows and warm not in rows  # pushed, nothing to fetch: done
    repush = rows[waiting]
    assert repush.reason == REPUSH and repush.attempts == 1 and repush.last_result == "sent"
    due = repush.due_at.replace(tzinfo=clock.now.tzinfo)
    assert clock.now + timedelta(seconds=50) <= due <= clock.now + timedelta(seconds=70)  # 60 s ± 15 %


async def test_a_batch_with_a_failure_records_every_answer(db: Database) -> None:
    """The statement-by-statement record is for all-accepted batches only: a batch with one
    accepted push and one to retry writes both (the retry's back-off, the accepted row gone), on
    either engine."""
    clock = Clock()
    transport = ScriptedTransport()
    transport.answer("t-busy", PushResult(Outcome.RETRY, status=503, reason="ServiceUnavailable"))
    dispatcher = PushDispatcher(db, PushConfig(batch_size=10, retry_seconds=30), {Protocol.IOS: transport},
                                clock=clock)
    ok = await add_device(db, "ok", token="t-ok")
    busy = await add_device(db, "busy", token="t-busy")
    await dispatcher.wake_many([ok, busy], "command")
    assert await dispatcher.dispatch_once() == 2
    rows = await _rows(db)
    assert ok not in rows
    assert rows[busy].last_result == "retry:ServiceUnavailable" and rows[busy].attempts == 1
    due = rows[busy].due_at.replace(tzinfo=clock.now.tzinfo)
    assert due > clock.now + timedelta(seconds=20)


async def test_the_worker_asked_again_during_its_take_skips_the_next_due_look_up(db: Database) -> None:
    dispatcher = PushDispatcher(db, PushConfig(batch_size=10), {Protocol.IOS: ScriptedTransport()})
    looked_up: list[int] = []

    async def next_due() -> None:
        looked_up.append(1)

    dispatcher._next_due = next_due  # type: ignore[method-assign]
    dispatcher.nudge()  # an enqueue's wake-up arrived while the worker took its batch
    await dispatcher._idle(1)
    assert looked_up == []
    dispatcher._nudge.clear()
    dispatcher.idle_seconds = 0.01
    await dispatcher._idle(1)  # quiet: it asks when the next row comes due, and waits
    assert looked_up == [1]
