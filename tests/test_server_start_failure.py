"""A start-up that fails (a plugin's start-up hook refuses: an unusable certificate slot, a CA that
cannot be loaded) closes what it opened: the plugins already started are shut down and the
database is closed (its SQLite checkpointer stopped, no connection left open). Before, the
failed start left them open; an aiosqlite connection left to the garbage collector stops its
thread with a future bound to whatever event loop is current then, which fails once that loop
is closed (a test run's thread exception)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from mdm.config import Config
from mdm.db import point_read
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin
from mdm.server.runtime import Server, open_context


async def test_a_failed_start_up_closes_what_it_opened(config: Config) -> None:
    events: list[str] = []

    async def first_up(ctx: ServerContext) -> None:
        events.append("first started")

    async def first_down(ctx: ServerContext) -> None:
        events.append("first shut down")

    async def refuses(ctx: ServerContext) -> None:
        raise RuntimeError("slot M: the key is unusable")

    plugins = [
        Plugin("first", startup=[first_up], shutdown=[first_down]),
        Plugin("second", startup=[refuses]),
    ]
    ctx = await open_context(config)
    await point_read.first(ctx.db.engine, text("SELECT 1"), {})  # a look-up holds the reader open
    server = Server(ctx, plugins)
    with pytest.raises(RuntimeError, match="slot M: the key is unusable"):
        await server.start()
    assert events == ["first started", "first shut down"]
    assert ctx.db.checkpointer_stopped
    assert ctx.db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
