"""A final answer to a command this process delivered is recorded without reading the command
(``mdm.core.in_flight``, issue 12 delivery CPU), on both engines; the write checks that the
command is still as delivered, and whatever changed it since (a recall, a NotNow, a delivery
elsewhere) sends the answer through the read-and-decide path, which records what it did before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ios_support import Phone, command_records, device_id_of, offered, queue_command
from sqlalchemy import event, update

from mdm.core import commands, in_flight
from mdm.db.engine import Database
from mdm.db.models import Command
from mdm.server.runtime import Server


@pytest.fixture
def statements(server: Server) -> Iterator[list[str]]:
    """The server's command statements (its workers run others meanwhile)."""
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "command" in sql:
            seen.append(sql)

    engine = server.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", statement)
    yield seen
    event.remove(engine, "before_cursor_execute", statement)


def _reads(seen: list[str]) -> list[str]:
    return [s for s in seen if "commands.guid = " in s and s.lstrip().upper().startswith("SELECT")]


async def test_an_answer_to_a_command_delivered_here_reads_no_command(
    server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database, statements: list[str]
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    statements.clear()
    assert offered(await phone.report(ios, "Acknowledged", guid)) is None
    assert _reads(statements) == []
    # PostgreSQL: the one guarded statement; SQLite: take (guarded), finish, journal (and the event).
    assert len(statements) == (3 if db.is_sqlite else 1)
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed" and command.active is None and command.payload == {}
    assert command.attempts == 1 and command.result_info == "Acknowledged"
    assert journal == ["processing", "delivered", "completed"]
    assert types == ["command_delivered", "command_completed"]
    assert in_flight.take(server.ctx.db.engine, guid) is None  # used up


async def test_an_answer_after_a_recall_since_the_delivery_ends_it_remove_failed(
    ios: httpx.AsyncClient, phone: Phone, db: Database, statements: list[str]
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    async with db.transaction() as session:
        await commands.recall(session, guid, by="test")
    statements.clear()
    assert offered(await phone.report(ios, "Acknowledged", guid)) is None
    assert _reads(statements) != []  # the copy was refused by the write: read and decided again
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.status == "remove_failed"
    assert journal == ["processing", "delivered", "removing", "remove_failed"]
    assert types == ["command_delivered", "command_recalled", "command_failed"]


async def test_an_acknowledgement_after_a_notnow_is_a_replay_until_delivered_again(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    assert offered(await phone.report(ios, "NotNow", guid)) is None
    assert (await phone.report(ios, "Acknowledged", guid)).status_code == 400
    assert offered(await phone.report(ios)) == guid  # a new exchange: offered again
    assert offered(await phone.report(ios, "Acknowledged", guid)) is None
    command, journal, _ = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed" and command.attempts == 2
    assert journal == ["processing", "delivered", "not_now", "completed"]


async def test_a_delivery_by_another_replica_since_is_answered_from_the_row(
    ios: httpx.AsyncClient, phone: Phone, db: Database, statements: list[str]
) -> None:
    """The copy says one delivery; the row says two (another replica delivered it again): the
    copy is refused and the answer is recorded from the row."""
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    async with db.transaction() as session:
        await session.execute(
            update(Command).where(Command.guid == guid).values(attempts=Command.attempts + 1)
        )
    statements.clear()
    assert offered(await phone.report(ios, "Acknowledged", guid)) is None
    assert _reads(statements) != []
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed" and command.attempts == 2
    assert journal == ["processing", "delivered", "completed"]
    assert types == ["command_delivered", "command_completed"]


async def test_a_replayed_answer_after_completion_changes_nothing(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    assert offered(await phone.report(ios, "Acknowledged", guid)) is None
    assert (await phone.report(ios, "Acknowledged", guid)).status_code == 400
    command, journal, _ = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed" and journal == ["processing", "delivered", "completed"]


async def test_an_inventory_command_is_kept_for_its_direct_answer(
    server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    """PostgreSQL records an inventory answer in one statement when the command is known
    (``store_facts_direct``), SQLite in its write transaction without the session
    (``channel_sqlite``): neither reads the command first."""
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceInformation", "Queries": ["DeviceName"]})
    assert offered(await phone.report(ios)) == guid
    kept = in_flight.take(server.ctx.db.engine, guid)
    assert kept is not None
    assert kept.guid == guid and kept.attempts == 1 and kept.status == "processing"
