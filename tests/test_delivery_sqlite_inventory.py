"""An inventory answer (DeviceInformation's QueryResponses, SecurityInfo, the application and
profile lists) on SQLite in one write transaction without SQLAlchemy's session
(``mdm.ios.channel_sqlite``; issue 12): the device's fact columns read, the inventory part and the
changed columns written, ``inventory_updated``, then the command taken, finished, journaled and
``command_completed``, as the transactional path writes them. Compared on both engines with the
transactional path (on PostgreSQL the engine's own direct path is the one-statement answer); on
SQLite it declines, nothing written, when another process holds the write lock or the command
changed since its delivery, and the transactional path then records the answer as before."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ios_support import Phone, command_records, device_id_of, enrolled_phone, offered, queue_command
from sql_capture import in_a_worker
from sqlalchemy import event
from test_delivery_facts_direct import ANSWERS, FACTS, INFO, _device, _events, _seed

from mdm.core import commands, delivery_sqlite, in_flight
from mdm.core.identity import Binding
from mdm.db.engine import Database
from mdm.ios import channel_direct, channel_sqlite
from mdm.ios.messages import parse_report
from mdm.server.runtime import Server

# DeviceInformation answers the one-statement answer of PostgreSQL declines (it needs the row:
# no ProductName or Model, an iPad without OSVersion) and one that changes no column.
IPAD = {"ProductName": "iPad13,1", "DeviceName": "Tab", "SerialNumber": "IPAD1"}
NO_PRODUCT = {"DeviceName": "Unnamed", "BatteryLevel": 0.9}
CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    *ANSWERS,
    (INFO, {"QueryResponses": IPAD}),
    (INFO, {"QueryResponses": NO_PRODUCT}),
    (INFO, {"QueryResponses": {}}),
]


def _sqlite(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's write transaction (PostgreSQL answers in one statement)")


async def _answered_as(
    server: Server, ios: httpx.AsyncClient, db: Database, step: dict[str, Any], answer: dict[str, Any]
) -> tuple[Any, ...]:
    """Everything one answer writes: the device row, the journal, the command, its last events."""
    phone = await enrolled_phone(server, db, ios)
    device_id = await device_id_of(db, phone.udid)
    await _seed(db, device_id)
    guid = await queue_command(db, device_id, step)
    assert offered(await phone.report(ios)) == guid
    assert offered(await phone.report(ios, "Acknowledged", guid, **answer)) is None
    command, journal, _ = await command_records(db, guid)
    written = (command.status, command.active, command.payload, command.result_info, command.result_data)
    answered = (await _events(db, device_id))[-3:]  # delivered, inventory (if any), completed
    return await _device(db, device_id), journal, written, answered


@pytest.mark.parametrize(
    ("step", "answer"), CASES, ids=[*(s["RequestType"] for s, _ in ANSWERS), "ipad", "no-product", "empty"]
)
async def test_the_direct_answer_writes_what_the_transaction_writes(
    server: Server,
    ios: httpx.AsyncClient,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    step: dict[str, Any],
    answer: dict[str, Any],
) -> None:
    recorded: list[bool | None] = []
    record = channel_sqlite._record

    def counted(*args: Any) -> bool | None:
        recorded.append(record(*args))
        return recorded[-1]

    monkeypatch.setattr(channel_sqlite, "_record", counted)
    direct = await _answered_as(server, ios, db, step, answer)
    if db.is_sqlite:
        assert recorded == [False]  # written by the direct transaction (nothing else queued)
    # The transactional path: the command and the device locked, decided, written.
    monkeypatch.setattr(channel_sqlite, "inventory_final", lambda *_: None)
    monkeypatch.setattr(channel_direct, "describing_final", lambda *_: None)
    recorded.clear()
    transactional = await _answered_as(server, ios, db, step, answer)
    assert recorded == []  # declined before any write: the session's path
    assert direct == transactional
    assert direct[1] == ["processing", "delivered", "completed"]


@pytest.fixture
def statements(server: Server) -> Iterator[list[str]]:
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if not in_a_worker():
            seen.append(" ".join(sql.split()[:3]).upper())

    engine = server.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", statement)
    yield seen
    event.remove(engine, "before_cursor_execute", statement)


async def test_a_device_information_answer_takes_no_session(
    server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database, statements: list[str]
) -> None:
    _sqlite(db)
    device_id = await device_id_of(db, phone.udid)
    await _seed(db, device_id)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    checkouts: list[int] = []

    def checked_out(*_args: object) -> None:
        if not in_a_worker():
            checkouts.append(1)

    pool = server.ctx.db.engine.sync_engine.pool
    event.listen(pool, "checkout", checked_out)
    statements.clear()
    try:
        assert offered(await phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS)) is None
    finally:
        event.remove(pool, "checkout", checked_out)
    assert checkouts == []  # the kept connection
    # The transactional path's statements after its read of the command, in its order.
    assert [s for s in statements if not s.startswith("SELECT BINDING")] == [
        "SELECT DEVICES.NAME, DEVICES.MODEL,",  # the fact columns
        "UPDATE DEVICES SET",  # the changed columns and the part
        "INSERT INTO EVENTS",  # inventory_updated
        "DELETE FROM COMMAND_QUEUE",  # taken if still in flight as delivered
        "UPDATE COMMANDS SET",
        "INSERT INTO COMMAND_JOURNAL",
        "INSERT INTO EVENTS",  # command_completed
    ], statements
    device = await _device(db, device_id)
    assert device["name"] == "Kim's iPhone" and device["os_name"] == "iOS"
    assert device["inventory"]["device_info"] == {"values": FACTS}
    assert device["inventory"]["apps"] == {"items": [{"Identifier": "z"}]}  # the other part kept
    assert (await _events(db, device_id))[-2:] == [
        ("inventory_updated", {"part": "device_info", "count": len(FACTS)}),
        ("command_completed", {"command_type": "Raw", "status": "completed", "info": "Acknowledged"}),
    ]


async def test_while_another_process_writes_the_answer_waits_on_the_transactional_path(
    server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    _sqlite(db)
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    other = sqlite3.connect(str(server.ctx.db.engine.url.database), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as the push worker process
    try:
        answered = asyncio.create_task(phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS))
        await asyncio.sleep(0.3)
        assert not answered.done()  # waiting for the lock on aiosqlite's thread, nothing written
    finally:
        other.rollback()
        other.close()
    assert offered(await answered) is None
    assert (await _device(db, device_id))["name"] == "Kim's iPhone"
    command, journal, types = await command_records(db, guid)
    assert command.status == "completed" and journal == ["processing", "delivered", "completed"]
    assert types[-2:] == ["inventory_updated", "command_completed"]


async def test_a_recall_after_the_delivery_leaves_the_answer_to_the_transaction(
    server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    _sqlite(db)
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    engine = server.ctx.db.engine
    copy = in_flight.take(engine, guid)
    assert copy is not None  # kept from the delivery: the answer is not read first
    async with db.transaction() as session:
        await commands.recall(session, guid, by="test")
    before = await _device(db, device_id)
    binding = Binding(device_id=device_id, identifier=phone.udid, status="enrolled", expires=0.0)
    report = parse_report(
        {"UDID": phone.udid, "Status": "Acknowledged", "CommandUUID": guid, "QueryResponses": FACTS}
    )
    async with delivery_sqlite.transaction(server.ctx.db) as tx:
        assert tx is not None
        assert channel_sqlite._record(tx, copy, binding, report) is None  # no longer in flight
        tx.rollback()
    assert await _device(db, device_id) == before  # the device's write undone with it
    in_flight.remember(engine, copy)
    assert offered(await phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS)) is None
    command, journal, types = await command_records(db, guid)
    assert command.status == "remove_failed"
    assert journal == ["processing", "delivered", "removing", "remove_failed"]
    assert types[-2:] == ["inventory_updated", "command_failed"]
