"""One deliverer at a time, replaced at once when it dies: the advisory lock (PostgreSQL) and the
file lock (SQLite) against a SIGKILLed holder, a second "replica" taking over delivery, and the
gap guard: a young event is not delivered before a lower id still being written (PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import PG_URL
from event_rows import outbox_row
from reporting_support import Receiver, add_events, pending_ids, settings
from sqlalchemy import text

from mdm.db.engine import Database
from mdm.db.leader_lock import ADVISORY_KEY, AdvisoryLock, FileLock
from mdm.reporting import service
from mdm.reporting.service import GAP_RECHECK_SECONDS, OutboxWorker

pg_only = pytest.mark.skipif(not PG_URL, reason="replicas share PostgreSQL; SQLite serves one node")

HOLDER = """
import asyncio, sys
from pathlib import Path
from mdm.db.engine import Database
from mdm.db.leader_lock import AdvisoryLock, FileLock

async def main():
    target = sys.argv[1]
    pg = target.startswith("postgresql")
    lock = AdvisoryLock(Database(target).engine) if pg else FileLock(Path(target))
    assert await lock.acquire()
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def _killed_holder_frees_the_lock(target: str, mine: AdvisoryLock | FileLock) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, target,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"held\n"
        assert not await mine.acquire()
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        for _ in range(100):  # the server notices the closed connection at once
            if await mine.acquire():
                break
            await asyncio.sleep(0.05)
        assert await mine.still_held()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await mine.release()


async def test_file_lock_one_holder_and_freed_by_death(tmp_path: Path) -> None:
    path = tmp_path / "reporting.lock"
    first, second = FileLock(path), FileLock(path)
    assert await first.acquire() and await first.acquire()  # re-entrant for its holder
    assert not await second.acquire()
    await first.release()
    assert await second.acquire()
    await second.release()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    await _killed_holder_frees_the_lock(str(path), FileLock(path))


@pg_only
async def test_advisory_lock_one_holder_and_freed_by_death(db: Database) -> None:
    other = Database(db.url)
    try:
        first, second = AdvisoryLock(db.engine), AdvisoryLock(other.engine)
        assert await first.acquire()
        assert not await second.acquire()
        await first.release()
        assert await second.acquire()
        await second.release()
        await _killed_holder_frees_the_lock(db.url, AdvisoryLock(db.engine))
    finally:
        await other.close()


@pytest.fixture
async def replica_db(db: Database) -> AsyncIterator[Database]:
    other = Database(db.url)
    yield other
    await other.close()


async def _until(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pg_only
async def test_a_second_replica_takes_over_when_the_holders_connection_dies(
    db: Database, replica_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "LOCK_CHECK_SECONDS", 0.1)
    receiver = Receiver()
    # The first, once it has lost its lock, waits long before trying again (as a dead process
    # would never try): otherwise it races the second for the lock it just lost.
    a = OutboxWorker(db, receiver, settings(), AdvisoryLock(db.engine), deliverer="a", lock_retry_seconds=60)
    b = OutboxWorker(replica_db, receiver, settings(), AdvisoryLock(replica_db.engine), deliverer="b",
                     lock_retry_seconds=0.1)
    ta = asyncio.create_task(a.run())
    await _until(lambda: asyncio.sleep(0, a.holding))
    tb = asyncio.create_task(b.run())
    try:
        first = await add_events(db, [("a", 1)] * 5)
        await _until(lambda: asyncio.sleep(0, set(first) <= set(receiver.accepted_ids())))
        assert a.holding and not b.holding
        async with db.engine.connect() as conn:  # the holder's connection dies (as with its process)
            await conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                                    "WHERE locktype = 'advisory' AND objid = :k AND database = "
                                    "(SELECT oid FROM pg_database WHERE datname = current_database())"),
                               {"k": ADVISORY_KEY & 0xFFFFFFFF})
        await _until(lambda: asyncio.sleep(0, b.holding))
        second = await add_events(db, [("b", 2)] * 5)
        await _until(lambda: asyncio.sleep(0, set(second) <= set(receiver.accepted_ids())))
        assert receiver.accepted_ids() == first + second and await pending_ids(db) == []
        await _until(lambda: asyncio.sleep(0, not a.holding))  # the first noticed and stopped
    finally:
        for task in (ta, tb):
            task.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)


@pg_only
async def test_a_young_event_waits_for_a_lower_id_still_being_written(db: Database, tmp_path: Path) -> None:
    receiver = Receiver()
    w = OutboxWorker(db, receiver, settings(), FileLock(tmp_path / "l"), deliverer="t", settle_seconds=0.5)
    async with db.sessionmaker() as slow, db.sessionmaker() as quick:
        await slow.begin()
        early = outbox_row(slow, "early", device_id=1)
        await slow.flush()  # its id is taken, the row not visible
        await quick.begin()
        late = outbox_row(quick, "late", device_id=1)
        await quick.flush()
        await quick.commit()
        assert late.id > early.id
        assert await w.step() == GAP_RECHECK_SECONDS and receiver.sends == 0
        await slow.commit()
    await w.step()
    assert receiver.accepted_ids() == [early.id, late.id]

    # A hole that stays (a rolled-back transaction) holds delivery only until the event settles.
    async with db.sessionmaker() as failed:
        await failed.begin()
        outbox_row(failed, "rolled_back", device_id=1)
        await failed.flush()
        after = await add_events(db, [("after", 1)])
        assert await w.step() == GAP_RECHECK_SECONDS and receiver.sends == 1
        await failed.rollback()
    await asyncio.sleep(0.55)
    await w.step()
    assert receiver.accepted_ids()[-1] == after[0]
    # Contiguous young events after the last delivered one go at once.
    more = await add_events(db, [("x", 1), ("y", 2)])
    await w.step()
    assert receiver.accepted_ids()[-2:] == more
