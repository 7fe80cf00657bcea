"""SQLite WAL checkpoints run on a background thread, never in a commit on the event loop.

A transaction run inline (on the loop's thread, ``Database.transaction(inline=True)``) that
commits past SQLite's auto-checkpoint threshold (1,000 pages) would copy the WAL into the
database file right there: ~17 ms of the loop stalled every few hundred round trips. The
server's database checkpoints from a thread instead and leaves the auto-checkpoint as a distant
safety net."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, text

from mdm.db import engine as engine_module
from mdm.db import sqlite_direct
from mdm.db.engine import Database

meta = MetaData()
blobs = Table("blobs", meta, Column("id", Integer, primary_key=True), Column("data", LargeBinary))


async def test_commits_leave_the_checkpoint_to_the_background_thread(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(meta.create_all)
        async with db.session() as session:
            limit = (await session.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
        # No commit reaches the threshold in normal running: the thread keeps the WAL short.
        assert limit >= 10_000
        # ~1,500 pages: past SQLite's default threshold, so a default connection's commit would
        # have checkpointed inline; here every frame is still waiting for the checkpointer.
        for _ in range(30):
            async with db.transaction(inline=True) as session:
                await session.execute(insert(blobs), [{"data": os.urandom(4000)} for _ in range(50)])
        db.start_checkpointer(interval=0.05)
        for _ in range(100):
            if db.checkpoints:
                break
            await asyncio.sleep(0.05)
        # The first pass found every frame still in the WAL (a commit that had checkpointed
        # would have restarted it: at most ~1,050 frames) and copied them all.
        assert db.last_checkpoint is not None
        log, done = db.last_checkpoint
        assert log == done > 1400
        for _ in range(100):  # ...and then let the next writer start the WAL over
            if db.restarts:
                break
            await asyncio.sleep(0.05)
        assert db.restarts >= 1
    finally:
        await db.close()
    assert db.checkpointer_stopped


async def test_a_failing_checkpoint_is_logged_and_retried(tmp_path: Path, caplog) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.sqlite3'}")
    db.start_checkpointer(interval=0.01)
    await asyncio.sleep(0.1)
    await db.close()
    assert db.checkpoints == 0 and db.checkpointer_stopped
    assert "WAL checkpoint failed" in caplog.text


def test_a_pass_lets_the_next_writer_start_the_wal_over_despite_a_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader still on the WAL when the pass has copied everything: the pass's restart waits for
    it, so that the next commit starts the WAL from its beginning. Without the wait that commit appended
    to the WAL (a reader held a mark), which then grew until a commit on the event loop crossed
    the auto-checkpoint threshold and copied it there."""
    path = tmp_path / "x.sqlite3"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("PRAGMA wal_autocheckpoint=0")
    setup.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    for _ in range(10):
        setup.executemany("INSERT INTO blobs (data) VALUES (?)", [(os.urandom(4000),) for _ in range(20)])
        setup.commit()
    reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM blobs").fetchone()  # a read mark on the WAL
    threading.Timer(0.3, lambda: reader.execute("COMMIT")).start()
    monkeypatch.setattr(engine_module, "RESTART_WAIT_MS", 5000)
    connection, (log, done) = engine_module._checkpoint(None, str(path))
    try:
        assert log == done > 200  # every frame copied
        engine_module._restart(connection)  # (the checkpointer holds the write queue meanwhile)
        setup.execute("INSERT INTO blobs (data) VALUES (x'00')")  # the next writer
        setup.commit()
        frames = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        assert frames <= 5, frames  # the WAL started over: this commit's frames only
    finally:
        connection.close()
        reader.close()
        setup.close()


async def test_the_restart_holds_the_write_queue_so_direct_writers_wait_instead_of_falling_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restart holds SQLite's write lock (RESTART waits for readers with it). Taken without
    the process's write queue, a direct (inline) writer that began meanwhile found the lock held
    and fell back to the session path: a pool checkout and SQLAlchemy's execution, which the
    inventory answer's "no session" test caught once under CI load. Holding the queue, the
    checkpointer makes the writer wait its turn, then run direct."""
    path = tmp_path / "x.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}")
    holding = threading.Event()

    def slow_restart(connection: sqlite3.Connection) -> None:  # SQLite's write lock for 0.3 s
        connection.execute("BEGIN IMMEDIATE")
        holding.set()
        time.sleep(0.3)
        connection.execute("ROLLBACK")

    monkeypatch.setattr(engine_module, "_restart", slow_restart)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(meta.create_all)
        async with db.transaction() as session:
            await session.execute(insert(blobs), [{"data": b"x"}])
        db.start_checkpointer(interval=0.05)
        while not holding.is_set():
            await asyncio.sleep(0.01)
        async with sqlite_direct.transaction(db) as tx:  # begins while the lock is held
            assert tx is not None  # it waited for the queue instead of falling back
        assert db.restarts >= 1
    finally:
        await db.close()
