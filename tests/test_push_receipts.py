"""The push-receipts seam: after each batch, the dispatcher tells ``PushReceipts`` how many pushes
the provider accepted per wake-up reason (what a bulk operation shows as "woken"); refused pushes
are not counted, and a receiver that fails never stops the worker. Real dispatcher, real APNs
client, the APNs contract fake on a real TLS socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from apns_support import Env, apns_env
from push_dispatch_support import add_device, count_wakeups, queue_command

from mdm.core.push import bulk_reason
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher

CONFIG = PushConfig(batch_size=100, concurrency=20)


class Recording:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, int]] = []
        self.fail = fail

    async def accepted(self, by_reason: Mapping[str, int]) -> None:
        self.calls.append(dict(by_reason))
        if self.fail:
            raise RuntimeError("the receiver is broken")

    def total(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for call in self.calls:
            for reason, n in call.items():
                out[reason] = out.get(reason, 0) + n
        return out


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with apns_env(tmp_path / "apns") as e:
        yield e


def _token(i: int) -> str:
    return f"{i:064x}"


async def _dispatch_all(dispatcher: PushDispatcher) -> None:
    while await dispatcher.dispatch_once():
        pass


async def test_accepted_pushes_are_counted_per_reason_after_each_batch(db: Database, env: Env) -> None:
    bulk = [await add_device(db, f"b{i}", token=_token(i)) for i in range(250)]
    single = await add_device(db, "single", token=_token(1000))
    gone = await add_device(db, "gone", token=_token(1001))
    env.fake.unregister(_token(1001))
    for device_id in bulk[:10]:
        await queue_command(db, device_id)  # still queued after the push: kept for a re-push
    receipts = Recording()
    dispatcher = PushDispatcher(db, CONFIG, {Protocol.IOS: env.client()}, receipts=receipts)
    try:
        await dispatcher.wake_many([*bulk, gone], bulk_reason(17))
        await dispatcher.wake(single, "command")
        await _dispatch_all(dispatcher)
    finally:
        await dispatcher.close()
    assert receipts.total() == {bulk_reason(17): 250, "command": 1}
    assert len(receipts.calls) == 3  # one call per batch of 100 (251 + 1 rows)
    assert env.fake.count == 251
    # The re-push rows of the devices whose command is still queued are not counted again.
    assert await count_wakeups(db) == 10


async def test_a_failing_receiver_does_not_stop_the_worker(db: Database, env: Env) -> None:
    ids = [await add_device(db, f"d{i}", token=_token(i)) for i in range(30)]
    receipts = Recording(fail=True)
    dispatcher = PushDispatcher(db, CONFIG, {Protocol.IOS: env.client()}, receipts=receipts)
    try:
        await dispatcher.wake_many(ids, bulk_reason(3))
        assert await dispatcher.dispatch_once() == 30
        await dispatcher.wake_many(ids[:5], bulk_reason(4))
        assert await dispatcher.dispatch_once() == 5
    finally:
        await dispatcher.close()
    assert receipts.calls == [{bulk_reason(3): 30}, {bulk_reason(4): 5}]
    assert await count_wakeups(db) == 0  # the answers were applied although the receiver failed


async def test_no_receiver_no_call_and_nothing_counted_when_nothing_was_accepted(
    db: Database, env: Env
) -> None:
    dev = await add_device(db, "refused", token=_token(5))
    env.fake.unregister(_token(5))
    receipts = Recording()
    dispatcher = PushDispatcher(db, CONFIG, {Protocol.IOS: env.client()}, receipts=receipts)
    try:
        await dispatcher.wake(dev, bulk_reason(9))
        await _dispatch_all(dispatcher)
    finally:
        await dispatcher.close()
    assert receipts.calls == []
