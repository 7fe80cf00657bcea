"""Turns at SQLite's write lock (``mdm.db.writer_turns``): the server's bulk batches give way to
the push worker process while it waits for the lock, instead of running back to back (at 10^6
devices the worker's takes and applies waited 1.0-2.7 s each). Real SQLite files, a second
``Database`` for the other writer (SQLite's locks between two connections are the same in one
process as in two), each side with its own turns file descriptor (``flock`` conflicts between
two open files as between two processes)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from bulk_support import add_devices
from push_dispatch_support import ScriptedTransport, add_device
from sqlalchemy import event, func, select, text

from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db import sqlite_driver
from mdm.db.engine import Database
from mdm.db.models import BulkOperation, Command, Protocol, utcnow
from mdm.db.writer_turns import SUFFIX, WriterTurns
from mdm.ios.commands import IosCommandTranslator
from mdm.push import store
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher


def _path(db: Database) -> str:
    turns = WriterTurns.for_url(db.url)
    assert turns is not None
    return turns.path


def _held(path: str) -> bool:
    """Whether another open file holds the turn (what a bulk worker's ``give_way`` sees)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_only_sqlite_files_have_turns(tmp_path: Path) -> None:
    turns = WriterTurns.for_url(f"sqlite+aiosqlite:///{tmp_path}/mdm.sqlite3")
    assert turns is not None and turns.path == f"{tmp_path}/mdm.sqlite3{SUFFIX}"
    assert WriterTurns.for_url("postgresql+asyncpg://postgres@127.0.0.1:5432/x") is None
    assert WriterTurns.for_url("sqlite+aiosqlite:///:memory:") is None
    assert WriterTurns.for_url("sqlite+aiosqlite:///file:x?mode=memory&uri=true") is None


async def test_give_way_waits_for_the_holder_and_no_longer(tmp_path: Path) -> None:
    path = str(tmp_path / f"db{SUFFIX}")
    worker, server = WriterTurns(path), WriterTurns(path)
    try:
        assert await server.give_way() == 0.0  # nobody holds it: one system call, no wait

        async def hold(seconds: float) -> None:
            async with worker.mine(), worker.mine():  # nested: one lock, released by the outer end
                await asyncio.sleep(seconds)
                assert _held(path)

        holder = asyncio.create_task(hold(0.1))
        await asyncio.sleep(0.01)
        waited = await server.give_way(limit=5.0)
        await holder
        assert 0.05 <= waited < 2.0
        assert not _held(path)
        holder = asyncio.create_task(hold(1.0))  # a stuck worker: the batch goes on at the limit
        await asyncio.sleep(0.01)
        assert 0.1 <= await server.give_way(limit=0.2) < 0.9
        await holder
        assert server.gave_way == 2
    finally:
        worker.close()
        server.close()


async def test_bulk_batches_give_way_to_a_writer_waiting_for_the_lock(db: Database) -> None:
    """While the other writer holds its turn, at most the batch in progress commits before it
    gets the lock; every device still gets exactly one command."""
    if not db.is_sqlite:
        pytest.skip("SQLite's one write lock; PostgreSQL has row locks and no turns")
    n, batch = 400, 10
    await add_devices(db, n)
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    service = BulkService(db, translators, Pushers(), batch_size=batch)
    assert service.turns is not None
    service.give_way_share = 100.0  # (batches of 10 take milliseconds: no share of them limits it)
    op = await service.create("Block", {}, by="test")
    other = Database(db.url)
    turns = WriterTurns(_path(db))
    queued_sql = select(BulkOperation.queued).where(BulkOperation.id == op.id)
    seen: list[tuple[int, int]] = []  # (queued when it asked, queued once it held the lock)
    runner = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(60):
            while True:
                async with turns.mine():
                    async with other.session() as session:
                        before = int(await session.scalar(queued_sql) or 0)
                    async with other.transaction() as session:
                        inside = int(await session.scalar(queued_sql) or 0)
                        await session.execute(text("UPDATE devices SET status = 'ok' WHERE id = 1"))
                        await asyncio.sleep(0.02)  # the bulk worker reaches its next batch meanwhile
                seen.append((before, inside))
                if inside >= n:
                    break
                await asyncio.sleep(0.005)
            state = select(BulkOperation.state).where(BulkOperation.id == op.id)
            while await _scalar(db, state) != "queued":
                await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        turns.close()
        await other.close()
    during = [(b, i) for b, i in seen if i < n]
    assert len(during) >= 3, seen  # the writer came in while the operation was queuing
    assert all(i - b <= batch for b, i in during), seen  # never more than the batch in progress
    assert service.turns.gave_way >= 1
    assert await _scalar(db, select(func.count()).select_from(Command)) == n
    assert await _scalar(db, select(func.count(func.distinct(Command.device_id)))) == n
    assert await _scalar(db, queued_sql) == n


async def test_the_workers_claim_and_apply_hold_the_turn(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite only")
    device = await add_device(db, "x", token="t")
    async with db.transaction() as session:
        await store.request(session, [device], utcnow(), "bulk:1", utcnow(), [Protocol.IOS.value])
    worker = Database(db.url)
    turns = WriterTurns.for_url(db.url)
    assert turns is not None
    dispatcher = PushDispatcher(worker, PushConfig(), {Protocol.IOS: ScriptedTransport()}, inline_writes=True,
                                turns=turns)
    writes: list[tuple[str, bool]] = []
    path = turns.path

    def look(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(("UPDATE", "DELETE", "INSERT")):
            writes.append((statement.split()[0], _held(path)))

    event.listen(worker.engine.sync_engine, "before_cursor_execute", look)
    try:
        assert await dispatcher.dispatch_once() == 1
    finally:
        event.remove(worker.engine.sync_engine, "before_cursor_execute", look)
        turns.close()
        await worker.close()
    assert writes and all(held for _, held in writes), writes  # the claim's and the apply's
    assert not _held(path)


async def _scalar(db: Database, stmt: Any) -> Any:
    async with db.session() as session:
        return await session.scalar(stmt)


async def test_a_worker_polling_for_the_lock_gets_it_as_soon_as_it_is_free(db: Database) -> None:
    """``sqlite_driver.LOCK_POLL`` (the push worker process): an inline transaction that finds the
    other process's lock tries again every millisecond; SQLite's busy handler would look again
    only after its growing sleeps (at 240 ms held: next at 328 ms)."""
    if not db.is_sqlite:
        pytest.skip("SQLite only")
    await add_device(db, "x", token="t")
    path = db.url.split("///", 1)[1].split("?", 1)[0]
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    worker = Database(db.url)
    token = sqlite_driver.LOCK_POLL.set(0.001)
    try:
        holder.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        released: list[float] = []

        def release() -> None:
            holder.execute("COMMIT")
            released.append(time.perf_counter())

        loop.call_later(0.24, release)
        async with worker.transaction(inline=True) as session:
            await session.execute(text("UPDATE devices SET status = 'ok'"))
            got = time.perf_counter()
    finally:
        sqlite_driver.LOCK_POLL.reset(token)
        holder.close()
        await worker.close()
    assert released and got - released[0] < 0.04


async def test_the_bulk_worker_gives_way_for_a_share_of_its_own_time_only(db: Database) -> None:
    """A push worker that holds its turn for long (a loaded host) slows queuing by at most
    ``give_way_share`` of the batches' own time."""
    if not db.is_sqlite:
        pytest.skip("SQLite only")
    n, batch = 200, 10
    await add_devices(db, n)
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    service = BulkService(db, translators, Pushers(), batch_size=batch)
    assert service.turns is not None
    op = await service.create("Block", {}, by="test")
    turns = WriterTurns(_path(db))
    state = select(BulkOperation.state).where(BulkOperation.id == op.id)
    runner = asyncio.create_task(service.run())
    try:
        async with turns.mine():  # held all along, never writing
            async with asyncio.timeout(60):
                while await _scalar(db, state) != "queued":
                    await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        turns.close()
    assert service.turns.waited <= 0.5 * service._batches_took + 0.05
    assert await _scalar(db, select(func.count()).select_from(Command)) == n


async def test_a_turns_file_that_cannot_be_opened_turns_them_off(tmp_path: Path) -> None:
    turns = WriterTurns(str(tmp_path / "missing" / f"db{SUFFIX}"))  # (no such directory)
    async with turns.mine():
        assert await turns.give_way() == 0.0
    turns.close()
