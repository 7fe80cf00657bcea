"""An inventory answer on PostgreSQL in one statement (issue 12, item 2): the command taken out
of the queue and finished, its journal entry, the device's columns, attributes and inventory
part, and both events, without a transaction block and without reading the device first
(``mdm.core.store_facts_direct``). It writes what the transactional path writes; a command
changed since its delivery leaves the answer to that path, and a device written meanwhile loses
nothing (the database merges under the row's lock)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ios_support import (
    Phone,
    command_records,
    device_id_of,
    enrolled_phone,
    offered,
    queue_command,
)
from sqlalchemy import event, select, text, update

from mdm.core import commands, delivery_direct, events, in_flight
from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.ios import channel_direct
from mdm.ios.event_types import INVENTORY_UPDATED
from mdm.server.runtime import Server

FACTS = {
    "DeviceName": "Kim's iPhone", "ProductName": "iPhone15,2", "OSVersion": "17.6", "BuildVersion": "21G80",
    "SerialNumber": "F2LXK0ABC", "IMEI": "35 000000 000000 0", "ModelName": "iPhone", "Model": "MQ9T3",
    "MEID": "3500000000000", "BatteryLevel": 0.5,
}
INFO = {"RequestType": "DeviceInformation", "Queries": sorted(FACTS)}
MDM_PROFILE = {
    "PayloadIdentifier": "com.example.mdm", "PayloadUUID": "U-1",
    "PayloadContent": [{"PayloadType": "com.apple.mdm", "PayloadIdentifier": "com.example.mdm.payload"}],
}
# (the command's step, the answer's keys): every inventory part the one statement writes.
ANSWERS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (INFO, {"QueryResponses": FACTS}),
    ({"RequestType": "ProfileList"}, {"ProfileList": [MDM_PROFILE]}),
    ({"RequestType": "SecurityInfo"}, {"SecurityInfo": {"HardwareEncryptionCaps": 3}}),
    ({"RequestType": "InstalledApplicationList"}, {"InstalledApplicationList": [{"Identifier": "a"}]}),
]
APPS = [{"Identifier": "z"}]
COLUMNS = (
    "name", "model", "os_name", "os_version", "build_version", "serial_number", "imei", "phone_number",
    "attributes", "status",
)


@pytest.fixture
def postgres(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("the one-statement answer is PostgreSQL's (SQLite answers in its write transaction)")


class Seen:
    """The server's command statements and the transactions begun on its connections."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.begun = 0

    def statement(self, _conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "command" in sql:
            self.statements.append(sql)

    def begin(self, _conn: Any) -> None:
        self.begun += 1


@pytest.fixture
def seen(server: Server) -> Iterator[Seen]:
    counted = Seen()
    engine = server.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", counted.statement)
    event.listen(engine, "begin", counted.begin)
    yield counted
    event.remove(engine, "before_cursor_execute", counted.statement)
    event.remove(engine, "begin", counted.begin)


async def _device(db: Database, device_id: int) -> dict[str, Any]:
    async with db.session() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        row = {column: getattr(device, column) for column in COLUMNS}
        # The refresh time is the answer's own clock reading: everything else must match.
        row["inventory"] = {
            part: {k: v for k, v in entry.items() if k != "refreshed_at"}
            for part, entry in (device.inventory or {}).items()
        }
        return row


async def _events(db: Database, device_id: int) -> list[tuple[str, dict[str, Any]]]:
    async with db.session() as session:
        rows = await session.execute(
            select(Event.type, Event.body).where(Event.device_id == device_id).order_by(Event.id)
        )
        return [(t, {k: v for k, v in body.items() if k != "command"}) for t, body in rows.all()]


async def _seed(db: Database, device_id: int) -> None:
    """Attributes and an inventory part the answers must keep."""
    async with db.transaction() as session:
        await session.execute(
            update(Device).where(Device.id == device_id).values(
                attributes={"topic": "com.apple.mgmt.x", "model_name": "old"},
                inventory={"apps": {"refreshed_at": "2026-01-01T00:00:00+00:00", "items": APPS}},
            )
        )


def _facts(device_id: int) -> delivery_direct.FactsWrite:
    announced = events.event_values(INVENTORY_UPDATED, device_id=device_id, part="device_info", count=0)
    return delivery_direct.FactsWrite("device_info", {"values": {}}, {"name": "x"}, {"a": "b"}, announced)


async def test_a_device_information_answer_is_one_statement(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, seen: Seen
) -> None:
    device_id = await device_id_of(db, phone.udid)
    await _seed(db, device_id)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    seen.statements.clear()
    seen.begun = 0
    assert offered(await phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS)) is None
    assert len(seen.statements) == 1 and seen.begun == 0  # was BEGIN, five statements, COMMIT
    device = await _device(db, device_id)
    assert device["name"] == "Kim's iPhone" and device["model"] == "iPhone15,2" and device["os_name"] == "iOS"
    assert device["os_version"] == "17.6" and device["serial_number"] == "F2LXK0ABC"
    assert device["imei"] == "35 000000 000000 0"
    assert device["attributes"] == {
        "topic": "com.apple.mgmt.x", "model_name": "iPhone", "model_number": "MQ9T3", "meid": "3500000000000"
    }
    assert device["inventory"]["apps"] == {"items": [{"Identifier": "z"}]}  # the other part kept
    assert device["inventory"]["device_info"] == {"values": FACTS}
    command, journal, _ = await command_records(db, guid)
    assert journal == ["processing", "delivered", "completed"]
    assert command.status == "completed" and command.active is None and command.payload == {}
    assert command.result_info == "Acknowledged" and command.result_data == {"QueryResponses": FACTS}
    assert (await _events(db, device_id))[-2:] == [
        ("inventory_updated", {"part": "device_info", "count": len(FACTS)}),
        ("command_completed", {"command_type": "Raw", "status": "completed", "info": "Acknowledged"}),
    ]
    assert in_flight.take(db.engine, guid) is None


@pytest.mark.parametrize(("step", "answer"), ANSWERS, ids=[step["RequestType"] for step, _ in ANSWERS])
async def test_the_one_statement_writes_what_the_transaction_writes(
    postgres: None,
    server: Server,
    ios: httpx.AsyncClient,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    step: dict[str, Any],
    answer: dict[str, Any],
) -> None:
    outcomes = []
    for direct in (True, False):
        if not direct:  # the transactional path: lock the command and the device, decide, write
            monkeypatch.setattr(channel_direct, "describing_final", lambda *_: None)
        phone = await enrolled_phone(server, db, ios)
        device_id = await device_id_of(db, phone.udid)
        await _seed(db, device_id)
        guid = await queue_command(db, device_id, step)
        assert offered(await phone.report(ios)) == guid
        assert offered(await phone.report(ios, "Acknowledged", guid, **answer)) is None
        command, journal, _ = await command_records(db, guid)
        written = (command.status, command.active, command.payload, command.result_info, command.result_data)
        answered = (await _events(db, device_id))[-3:]  # delivered, inventory, completed
        outcomes.append((await _device(db, device_id), journal, written, answered))
    assert outcomes[0] == outcomes[1]


async def test_a_device_written_while_the_answer_waits_for_its_row_keeps_both_writes(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    """A check-in holds the device's row (its attributes and name) when the answer's statement
    reaches it: the statement waits, then merges into the row as committed."""
    device_id = await device_id_of(db, phone.udid)
    await _seed(db, device_id)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    async with db.engine.connect() as holder:
        await holder.execute(
            update(Device).where(Device.id == device_id).values(
                name="renamed meanwhile", attributes={"topic": "com.apple.mgmt.x", "held": "yes"}
            )
        )
        answering = asyncio.create_task(phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS))
        async with db.engine.connect() as watcher:
            for _ in range(500):  # until the answer's statement waits for the held row
                waiting = await watcher.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'WITH locked AS%'"
                ))
                if waiting or answering.done():
                    break
                await asyncio.sleep(0.02)
        assert waiting == 1 and not answering.done()
        await holder.commit()
    assert offered(await answering) is None
    device = await _device(db, device_id)
    assert device["attributes"] == {
        "topic": "com.apple.mgmt.x", "held": "yes",
        "model_name": "iPhone", "model_number": "MQ9T3", "meid": "3500000000000",
    }
    assert device["name"] == "Kim's iPhone"  # the answer wrote after the check-in
    assert device["inventory"]["apps"] == {"items": [{"Identifier": "z"}]}


async def test_a_recall_after_the_delivery_leaves_the_answer_to_the_transaction(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    kept = in_flight.take(server.ctx.db.engine, guid)
    assert kept is not None
    in_flight.remember(server.ctx.db.engine, kept)  # the answer below uses it
    async with db.transaction() as session:
        await commands.recall(session, guid, by="test")
    before = await _device(db, device_id)
    async with delivery_direct.autocommit(server.ctx.db.engine) as conn:
        copy = in_flight.take(server.ctx.db.engine, guid)
        assert copy is not None
        facts = _facts(device_id)
        assert await delivery_direct.complete_describing(
            conn, copy, success=True, info="Acknowledged", data=None, facts=facts
        ) is None
    assert await _device(db, device_id) == before  # nothing written
    in_flight.remember(server.ctx.db.engine, copy)
    assert offered(await phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS)) is None
    command, journal, types = await command_records(db, guid)
    assert command.status == "remove_failed"
    assert journal == ["processing", "delivered", "removing", "remove_failed"]
    assert types[-2:] == ["inventory_updated", "command_failed"]
    assert (await _device(db, device_id))["name"] == "Kim's iPhone"


async def test_of_two_inventory_answers_to_one_command_one_is_recorded(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    engine = server.ctx.db.engine
    copy = in_flight.take(engine, guid)
    assert copy is not None
    facts = _facts(device_id)
    async with delivery_direct.autocommit(engine) as one, delivery_direct.autocommit(engine) as two:
        outcomes = [
            await delivery_direct.complete_describing(
                conn, copy, success=True, info="Acknowledged", data=None, facts=facts
            )
            for conn in (one, two)
        ]
    assert outcomes == [False, None]  # nothing else queued; the second found it taken
    command, journal, types = await command_records(db, guid)
    assert command.status == "completed" and journal == ["processing", "delivered", "completed"]
    assert types.count("inventory_updated") == 1 and types.count("command_completed") == 1


async def test_an_answer_to_a_command_delivered_elsewhere_reads_it_first(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database, seen: Seen
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, INFO)
    assert offered(await phone.report(ios)) == guid
    in_flight.forget(server.ctx.db.engine, guid)  # as if another replica had delivered it
    seen.statements.clear()
    seen.begun = 0
    assert offered(await phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS)) is None
    assert len(seen.statements) == 2 and seen.begun == 0  # the command read, then the one write
    assert (await _device(db, device_id))["name"] == "Kim's iPhone"
    assert (await command_records(db, guid))[0].status == "completed"


async def test_a_copy_older_than_a_redelivery_writes_nothing(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database, seen: Seen
) -> None:
    """Delivered, not answered, delivered again at the next Idle: a copy of the first delivery
    (one delivery fewer) is refused; the answer then uses the copy of the second."""
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, INFO)
    engine = server.ctx.db.engine
    assert offered(await phone.report(ios)) == guid
    first = in_flight.take(engine, guid)
    assert first is not None and first.attempts == 1
    assert offered(await phone.report(ios)) == guid  # offered again (kept anew, two deliveries)
    before = await _device(db, device_id)
    async with delivery_direct.autocommit(engine) as conn:
        assert await delivery_direct.complete_describing(
            conn, first, success=True, info="Acknowledged", data=None, facts=_facts(device_id)
        ) is None
    assert await _device(db, device_id) == before
    seen.statements.clear()
    assert offered(await phone.report(ios, "Acknowledged", guid, QueryResponses=FACTS)) is None
    assert len(seen.statements) == 1
    command, journal, types = await command_records(db, guid)
    assert command.status == "completed" and command.attempts == 2
    assert journal == ["processing", "delivered", "completed"]
    assert types[-2:] == ["inventory_updated", "command_completed"]
