"""``mdm.db.point_read.close`` while a look-up is in flight: the reader that look-up holds is closed
when it is done with it, not left open with no one to close it (a connection checked out of a
disposed pool, open until the process ends)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text

from mdm.db import point_read
from mdm.db.engine import Database


async def test_a_look_up_in_flight_at_close_leaves_no_connection_checked_out(db: Database) -> None:
    pool = db.engine.sync_engine.pool
    # Held here so that a connection no one closed stays checked out instead of being reclaimed
    # by the garbage collector (with a warning) as the look-up's reader goes away.
    lent: list[Any] = []
    event.listen(pool, "checkout", lambda _dbapi, _record, proxy: lent.append(proxy))
    look_up = asyncio.create_task(point_read.first(db.engine, text("SELECT 3 AS n"), {}))
    await asyncio.sleep(0)  # the look-up is opening its reader connection (a driver hand-off)
    assert not look_up.done()
    await point_read.close(db.engine)
    assert (await look_up) == (3,)
    assert lent and pool.checkedout() == 0  # type: ignore[attr-defined]
    assert (await point_read.first(db.engine, text("SELECT 4 AS n"), {})) == (4,)  # reopened on use
    await point_read.close(db.engine)
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_close_drops_the_engines_plans(db: Database) -> None:
    # A plan holds a named tuple class, cyclic garbage: dropped with the engine, it was left to a
    # later collection (found as a test's own garbage by tests/test_db_prepared_cycles.py).
    assert (await point_read.first(db.engine, text("SELECT 5 AS n"), {})) == (5,)
    await point_read.close(db.engine)
    assert db.engine.sync_engine not in point_read._DIRECT
    assert db.engine.sync_engine not in point_read._READERS
