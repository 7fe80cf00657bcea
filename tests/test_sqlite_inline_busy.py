"""An inline SQLite statement (on the event loop's thread) never sleeps in SQLite's busy handler:
when another process holds the write lock it goes to aiosqlite's thread (or, in the push worker,
polls). A connection first opened inside an inline transaction ran the connect event's ``PRAGMA
busy_timeout=10000`` inline after the driver had set 0, and the driver still took the timeout
for 0: every later inline statement on that connection waited up to 10 s on the loop's thread,
freezing everything else the process did (the push worker's sends, the server's requests)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from push_dispatch_support import add_device
from sqlalchemy import text

from mdm.db.engine import Database


async def test_a_connection_opened_inline_does_not_block_the_loop_on_a_held_lock(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's busy handler")
    await add_device(db, "x", token="t")
    path = db.url.split("///", 1)[1].split("?", 1)[0]
    fresh = Database(db.url)  # its first connection is opened inside the inline transaction below
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        async with fresh.transaction(inline=True) as session:
            await session.execute(text("UPDATE devices SET status = 'ok'"))
        holder.execute("BEGIN IMMEDIATE")  # the other process
        asyncio.get_running_loop().call_later(0.2, holder.execute, "COMMIT")
        started = time.perf_counter()
        async with fresh.transaction(inline=True) as session:
            await session.execute(text("UPDATE devices SET status = 'ok'"))
        took = time.perf_counter() - started
    finally:
        holder.close()
        await fresh.close()
    # The loop ran the release at 0.2 s; blocked in the busy handler it could only run it after
    # the 10 s timeout refused the inline try.
    assert took < 2.0
