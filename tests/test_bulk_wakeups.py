"""A bulk batch owes its devices' wake-ups in its own transaction (``Pushers.owe``, the push
dispatcher's ``push_wakeups`` rows): they commit with its commands or roll back with them, and
cost no write transaction of their own (on SQLite with a push worker process, each such
transaction queued behind the worker's). Pushers that wake otherwise (KES long polls) are still
called after the commit. Real dispatcher, real SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from push_dispatch_support import ScriptedTransport, add_device
from sql_capture import write_transactions
from sqlalchemy import func, select, text

from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import OwingPusher, Pushers, bulk_reason
from mdm.db.engine import Database
from mdm.db.models import BulkOperation, Command, CommandQueueEntry, Protocol
from mdm.ios.commands import IosCommandTranslator
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.tables import PushWakeup


async def _fleet(db: Database, n: int) -> list[int]:
    """``n`` iOS devices with a valid token, and one without (never owed a wake-up)."""
    ids = [await add_device(db, f"d{i}", token=f"{i:064x}") for i in range(n)]
    ids.append(await add_device(db, "tokenless", token=None))
    return ids


def _service(db: Database, pushers: Pushers, batch_size: int) -> BulkService:
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    return BulkService(db, translators, pushers, batch_size=batch_size)


def _dispatcher(db: Database) -> PushDispatcher:
    return PushDispatcher(db, PushConfig(), {Protocol.IOS: ScriptedTransport()})


async def _scalar(db: Database, stmt: Any) -> Any:
    async with db.session() as session:
        return await session.scalar(stmt)


async def _owed(db: Database) -> dict[int, tuple[str, int]]:
    async with db.session() as session:
        rows = await session.execute(select(PushWakeup.device_id, PushWakeup.reason, PushWakeup.requests))
        return {device_id: (reason, requests) for device_id, reason, requests in rows}


async def test_a_batch_owes_its_wake_ups_in_its_own_transaction(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _fleet(db, 5)
    dispatcher = _dispatcher(db)
    assert isinstance(dispatcher, OwingPusher)
    pushers = Pushers()
    pushers.register(Protocol.IOS, dispatcher)
    svc = _service(db, pushers, batch_size=4)
    op = await svc.create("Block", {}, by="test")
    with write_transactions(db, monkeypatch) as transactions:
        assert await svc.step(op.id)  # devices 1-4
        assert len(transactions) == 1, "one write transaction per batch, the wake-ups in it"
        assert any("push_wakeups" in s for s in transactions[0])
        assert await _owed(db) == {d: (bulk_reason(op.id), 1) for d in ids[:4]}
        assert not await svc.step(op.id)  # device 5 and the tokenless one: the end
        assert len(transactions) == 2
    assert await _owed(db) == {d: (bulk_reason(op.id), 1) for d in ids[:5]}  # not the tokenless
    assert await _scalar(db, select(func.count()).select_from(CommandQueueEntry)) == 6


async def _refuse_wake_ups(db: Database) -> None:
    """A trigger that refuses every new ``push_wakeups`` row (as a full disk or a lost connection
    would, at that statement)."""
    async with db.transaction() as session:
        if db.is_sqlite:
            await session.execute(text(
                "CREATE TRIGGER refuse_wakeups BEFORE INSERT ON push_wakeups "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
        else:
            await session.execute(text(
                "CREATE FUNCTION refuse_wakeups() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"))
            await session.execute(text(
                "CREATE TRIGGER refuse_wakeups BEFORE INSERT ON push_wakeups "
                "FOR EACH ROW EXECUTE FUNCTION refuse_wakeups()"))


async def _accept_wake_ups(db: Database) -> None:
    async with db.transaction() as session:
        if db.is_sqlite:
            await session.execute(text("DROP TRIGGER IF EXISTS refuse_wakeups"))
        else:
            await session.execute(text("DROP TRIGGER IF EXISTS refuse_wakeups ON push_wakeups"))
            await session.execute(text("DROP FUNCTION IF EXISTS refuse_wakeups()"))


async def test_a_batch_whose_wake_ups_fail_leaves_no_command_either(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the wake-ups were asked for after the batch's commit, and a failure there was
    logged: the commands stayed queued with nobody owing their devices a push (until the
    recovery pass, every ``push.retry_seconds``)."""
    monkeypatch.setattr("mdm.core.bulk.asyncio.sleep", _no_sleep)  # (the retry's back-off)
    ids = await _fleet(db, 4)
    pushers = Pushers()
    pushers.register(Protocol.IOS, _dispatcher(db))
    svc = _service(db, pushers, batch_size=10)
    op = await svc.create("Block", {}, by="test")
    await _refuse_wake_ups(db)
    try:
        assert await svc.step(op.id)  # failed: retried at the next step
    finally:
        await _accept_wake_ups(db)
    assert await _owed(db) == {}
    assert await _scalar(db, select(func.count()).select_from(Command)) == 0
    assert await _scalar(db, select(func.count()).select_from(CommandQueueEntry)) == 0
    assert await _scalar(db, select(BulkOperation.cursor).where(BulkOperation.id == op.id)) == 0
    # The retry writes both.
    assert not await svc.step(op.id)
    assert await _owed(db) == {d: (bulk_reason(op.id), 1) for d in ids[:4]}
    assert await _scalar(db, select(func.count()).select_from(Command)) == 5


async def _no_sleep(_seconds: float) -> None:
    return None


class Waking:
    """A pusher that wakes by other means than rows (as the KES long polls): called after the
    commit, with the batch's devices."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls: list[tuple[list[int], str, int]] = []

    async def wake(self, device_id: int, reason: str) -> None:
        await self.wake_many([device_id], reason)

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        # What is committed when it is called: the commands it announces.
        queued = await _scalar(self.db, select(func.count()).select_from(CommandQueueEntry).where(
            CommandQueueEntry.device_id.in_(list(device_ids))))
        self.calls.append((list(device_ids), reason, int(queued)))

    async def wake_at(self, device_id: int, due: object, reason: str) -> None:
        raise AssertionError("bulk wakes at once")


async def test_a_pusher_without_rows_is_called_after_the_commit(db: Database) -> None:
    ids = await _fleet(db, 3)
    waking = Waking(db)
    pushers = Pushers()
    pushers.register(Protocol.IOS, waking)
    assert not isinstance(waking, OwingPusher)
    svc = _service(db, pushers, batch_size=2)
    op = await svc.create("Block", {}, by="test")
    while await svc.step(op.id):
        pass
    assert waking.calls == [(ids[:2], bulk_reason(op.id), 2), (ids[2:], bulk_reason(op.id), 2)]
    assert await _owed(db) == {}
