"""A cold Idle poll (nothing cached: after a restart) reads its binding and whether anything is
queued for the device in one statement (``mdm.ios.store_binding_probe``): one round trip on PostgreSQL,
one look-up on SQLite. What it delivers does not change: a queued command is handed out, an
empty queue answers empty, and an enqueue after that empty answer is seen by the next poll."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from ios_support import Phone, device_id_of, queue_command
from sql_capture import in_a_worker
from sqlalchemy import event

from mdm.db.engine import Database
from mdm.ios import plugin as ios_plugin
from mdm.server.runtime import Server


@pytest.fixture
def statements(server: Server) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if not in_a_worker():  # the server's workers (the outbox's upkeep) are not the poll's
            seen.append(statement)

    engine = server.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def _restart_caches(server: Server) -> None:
    svc = ios_plugin.service(server.ctx)
    svc.bindings.clear()
    svc.hint.clear()


def _request_type(response: httpx.Response) -> str | None:
    import plistlib

    assert response.status_code == 200, response.text
    if not response.content:
        return None
    return str(plistlib.loads(response.content)["Command"]["RequestType"])


async def test_a_cold_idle_poll_of_an_empty_queue_is_one_statement(
    ios: httpx.AsyncClient, phone: Phone, server: Server, statements: list[str]
) -> None:
    if server.ctx.db.is_sqlite:
        pytest.skip("SQLite's look-ups run on the reader's sqlite3 connection, unseen by engine events")
    _restart_caches(server)
    statements.clear()
    assert _request_type(await phone.report(ios)) is None
    assert len(statements) == 1, statements
    assert "ios_devices" in statements[0] and "command_queue" in statements[0]
    statements.clear()
    assert _request_type(await phone.report(ios)) is None  # warm: nothing at all
    assert statements == []


async def test_a_cold_idle_poll_still_delivers_what_is_queued(
    ios: httpx.AsyncClient, phone: Phone, server: Server, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    _restart_caches(server)
    assert _request_type(await phone.report(ios)) == "DeviceLock"


async def test_an_enqueue_after_a_cold_empty_answer_is_seen_by_the_next_poll(
    ios: httpx.AsyncClient, phone: Phone, server: Server, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    _restart_caches(server)
    assert _request_type(await phone.report(ios)) is None  # the probe said: nothing queued
    await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert _request_type(await phone.report(ios)) == "DeviceLock"
