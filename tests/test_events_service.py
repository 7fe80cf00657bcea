"""Service events: started once every listener is bound, stopped at a graceful shutdown, and a
listener that cannot bind is recorded before the start-up error goes up."""

from __future__ import annotations

import os
import socket

import pytest
from sqlalchemy import select

from mdm import __version__
from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, StartupError, open_context


async def _service_events(db: Database) -> list[Event]:
    async with db.session() as session:
        kinds = ("service_started", "service_stopped", "listener_failed")
        stmt = select(Event).where(Event.type.in_(kinds)).order_by(Event.id)
        return list((await session.scalars(stmt)).all())


async def test_started_after_the_listeners_bind_and_stopped_at_shutdown(config: Config, db: Database) -> None:
    server = Server(await open_context(config), PLUGINS)
    await server.start()
    try:
        started = await _service_events(db)
        assert [e.type for e in started] == ["service_started"]
        body = started[0].body
        assert body["version"] == __version__ and body["pid"] == os.getpid()
        bound = {f"{b.listener}:{'https' if b.tls else 'http'}": port for b, port in server.bound}
        assert body["listeners"] == bound and all(port > 0 for port in bound.values())
        assert "admin:https" in body["listeners"] and started[0].severity == "info"
    finally:
        await server.stop()
    events = await _service_events(db)
    assert [e.type for e in events] == ["service_started", "service_stopped"]
    stopped = events[1].body
    assert stopped["pid"] == os.getpid() and stopped["unfinished_requests"] == 0
    assert 0 <= stopped["uptime_seconds"] < 120
    await server.stop()  # a second stop (the runtime's error path) writes nothing more
    assert len(await _service_events(db)) == 2


async def test_a_listener_that_cannot_bind_is_recorded_before_the_error(config: Config, db: Database) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config.listeners.admin.port = port
    server = Server(await open_context(config), PLUGINS)
    try:
        with pytest.raises(StartupError, match=f"port {port} \\(admin listener\\) is already in use"):
            await server.start()
    finally:
        holder.close()
    events = await _service_events(db)
    assert [e.type for e in events] == ["listener_failed"]  # never started, so never "stopped"
    assert events[0].severity == "critical"
    assert events[0].body == {
        "listener": "admin", "bind": "127.0.0.1", "port": port, "config_key": "listeners.admin.port",
        "error": f"port {port} (admin listener) is already in use (listeners.admin.port / MDM_ADMIN_PORT): "
        "stop the other process or choose another port",
    }
