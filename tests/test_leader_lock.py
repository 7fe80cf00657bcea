"""The PostgreSQL leader lock (``mdm.db.leader_lock.AdvisoryLock``) after a check cancelled
mid-statement, as at a shutdown: SQLAlchemy refused the connection from then on
(``PendingRollbackError`` on every later check), and a worker's leadership loop spun on it until
the test's teardown timed out. The check now drops the connection (and the lock with it) when
cancelled, and the next check answers."""

from __future__ import annotations

import asyncio

import pytest

from mdm.db.engine import Database
from mdm.db.leader_lock import AdvisoryLock


async def test_a_cancelled_check_leaves_the_lock_usable(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("advisory locks are PostgreSQL's; SQLite uses a file lock")
    lock = AdvisoryLock(db.engine, key=987_654)
    other = AdvisoryLock(db.engine, key=987_654)
    assert await lock.acquire()
    try:
        for _ in range(20):
            task = asyncio.create_task(lock.still_held())
            await asyncio.sleep(0)  # the check is on the wire
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            # Never raises: True if the check finished before the cancellation, else False (the
            # connection and its lock were given up) and the lock can be taken again.
            if not await lock.still_held():
                assert await lock.acquire()
            assert not await other.acquire()  # held by exactly one
    finally:
        await lock.release()
    assert await other.acquire()  # released for real
    await other.release()
