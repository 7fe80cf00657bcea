"""The command round trip on PostgreSQL without transaction blocks (issue 12, item 2): an Idle
poll that hands out a command and a final answer that only completes it are two statements each
on an autocommit connection; a command that changed between the read and the write is left to
the transactional path, which decides as before."""

from __future__ import annotations

import plistlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ios_support import Phone, command_records, device_id_of, offered, queue_command
from sqlalchemy import event, select

from mdm.core import commands, delivery_direct
from mdm.db.engine import Database
from mdm.db.models import Command, CommandQueueEntry, Device
from mdm.ios import command_steps
from mdm.ios.command_codec import to_plist_dict
from mdm.server.runtime import Server


@pytest.fixture
def postgres(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("transaction blocks are PostgreSQL's round trips (SQLite runs inline)")


class Seen:
    """The command statements of the server's engine, and the transactions begun and committed on
    the connections that ran them (the server's workers run statements of their own meanwhile)."""

    def __init__(self) -> None:
        self.statements: list[tuple[int, str]] = []
        self.begun: list[int] = []
        self.committed: list[int] = []

    def statement(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "command" in statement:
            self.statements.append((id(conn), statement))

    def begin(self, conn: Any) -> None:
        self.begun.append(id(conn))

    def commit(self, conn: Any) -> None:
        self.committed.append(id(conn))

    def counts(self) -> tuple[int, int, int]:
        """(command statements, transactions begun on their connections, committed there)."""
        mine = {conn for conn, _ in self.statements}
        return (
            len(self.statements),
            sum(1 for conn in self.begun if conn in mine),
            sum(1 for conn in self.committed if conn in mine),
        )

    def reset(self) -> None:
        self.statements.clear()
        self.begun.clear()
        self.committed.clear()


@pytest.fixture
def seen(server: Server) -> Iterator[Seen]:
    counted = Seen()
    engine = server.ctx.db.engine.sync_engine
    hooks = (
        ("before_cursor_execute", counted.statement),
        ("begin", counted.begin),
        ("commit", counted.commit),
    )
    for name, hook in hooks:
        event.listen(engine, name, hook)
    yield counted
    for name, hook in hooks:
        event.remove(engine, name, hook)



async def test_a_postgresql_round_trip_runs_without_transaction_blocks(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, seen: Seen
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    seen.reset()
    assert offered(await phone.report(ios)) == guid
    assert seen.counts() == (2, 0, 0)  # read, then claim + in flight
    seen.reset()
    assert offered(await phone.report(ios, "Acknowledged", guid)) is None
    assert seen.counts() == (1, 0, 0)  # take + finish (the command as delivered: no read)
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert journal == ["processing", "delivered", "completed"]
    assert types == ["command_delivered", "command_completed"]
    assert command.status == "completed" and command.active is None and command.payload == {}
    assert command.attempts == 1 and command.result_info == "Acknowledged"
    assert command.delivered_at is not None and command.finished_at is not None


async def test_the_next_command_follows_an_answer_without_a_transaction_block(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, seen: Seen
) -> None:
    device_id = await device_id_of(db, phone.udid)
    first = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block", priority=9)
    second = await queue_command(db, device_id, {"RequestType": "ProfileList"})
    assert offered(await phone.report(ios)) == first
    seen.reset()
    assert offered(await phone.report(ios, "Acknowledged", first)) == second
    assert seen.counts() == (3, 0, 0)  # take + finish, then read and claim the next
    assert (await command_records(db, second, event_prefix="command_"))[1] == ["processing", "delivered"]


async def test_a_command_recalled_after_it_was_read_is_not_delivered(
    postgres: None, server: Server, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    async with delivery_direct.autocommit(server.ctx.db.engine) as conn:
        command = await delivery_direct.next_command(conn, device_id, ready_only=False)
        assert command is not None and command.guid == guid
        async with db.transaction() as session:
            await commands.recall(session, guid, by="test")
        assert not await delivery_direct.delivered(conn, command)
    recalled, journal, types = await command_records(db, guid, event_prefix="command_")
    assert recalled.status == "removed" and recalled.attempts == 0 and recalled.delivered_at is None
    assert journal == ["processing", "removed"]
    assert types == ["command_recalled"]


async def test_an_answer_racing_a_recall_is_recorded_by_the_transactional_path(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    """Read as ``processing``, recalled (``removing``) before the write: the one-statement
    answer writes nothing, and the device's answer then ends the command ``remove_failed``."""
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    async with delivery_direct.autocommit(server.ctx.db.engine) as conn:
        command = await delivery_direct.command_by_guid(conn, guid)
        assert command is not None and command.status == "processing"
        async with db.transaction() as session:
            await commands.recall(session, guid, by="test")
        answered = await delivery_direct.complete(conn, command, success=True, info="Acknowledged", data=None)
        assert answered is None
    assert (await command_records(db, guid, event_prefix="command_"))[0].status == "removing"
    assert offered(await phone.report(ios, "Acknowledged", guid)) is None
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.status == "remove_failed"
    assert journal == ["processing", "delivered", "removing", "remove_failed"]
    assert types == ["command_delivered", "command_recalled", "command_failed"]


async def test_of_two_answers_to_one_command_one_is_recorded(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    engine = server.ctx.db.engine
    async with delivery_direct.autocommit(engine) as one, delivery_direct.autocommit(engine) as two:
        read = [await delivery_direct.command_by_guid(conn, guid) for conn in (one, two)]
        outcomes = []
        for conn, command in zip((one, two), read, strict=True):
            assert command is not None
            outcomes.append(
                await delivery_direct.complete(conn, command, success=True, info="Acknowledged", data=None)
            )
    assert outcomes == [False, None]  # no other command queued; the second found it taken
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed"
    assert journal == ["processing", "delivered", "completed"]
    assert types == ["command_delivered", "command_completed"]
    async with db.session() as session:
        assert await session.get(CommandQueueEntry, command.id) is None


async def test_a_redelivery_after_an_unanswered_one_is_not_journaled_again(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert offered(await phone.report(ios)) == guid
    assert offered(await phone.report(ios)) == guid  # delivered, never answered: offered again
    command, journal, types = await command_records(db, guid, event_prefix="command_")
    assert command.attempts == 2
    assert journal == ["processing", "delivered"]
    assert types == ["command_delivered"]


async def test_the_autocommit_connection_returns_to_the_pool_in_transaction_mode(
    postgres: None, server: Server, db: Database
) -> None:
    # A kept connection stays in autocommit mode out of the pool until the engine closes.
    engine = db.engine
    async with delivery_direct.autocommit(engine) as conn:
        adapted: Any = conn.connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        assert adapted.autocommit
    pool: Any = engine.sync_engine.pool
    assert adapted.autocommit and pool.checkedout() == 1
    await db.close()
    assert not adapted.autocommit and pool.checkedout() == 0
    sqlite = Database("sqlite+aiosqlite:///:memory:")
    try:
        assert not delivery_direct.autocommits(sqlite.engine)
        with pytest.raises(ValueError):
            async with delivery_direct.autocommit(sqlite.engine):
                pass
    finally:
        await sqlite.close()


def test_a_bare_request_is_encoded_once_and_an_unlock_token_never_kept() -> None:
    def plain(uuid: str, step: dict[str, Any], token: bytes | None = None) -> bytes:
        body = to_plist_dict(step, unlock_token=token)
        return plistlib.dumps({"CommandUUID": uuid, "Command": body}, fmt=plistlib.FMT_XML)

    lock = {"RequestType": "DeviceLock"}
    command_steps._ENCODED.clear()
    for guid in ("0B0C5D1E-AAAA-4BBB-8CCC-000000000001", "0B0C5D1E-AAAA-4BBB-8CCC-000000000002"):
        assert command_steps.message(Command(guid=guid, payload=lock)) == plain(guid, lock)
    assert list(command_steps._ENCODED) == [repr(lock)]
    clear = {"RequestType": "ClearPasscode"}
    for guid, token in (("G-1", b"one device"), ("G-2", b"another")):
        sent = command_steps.message(Command(guid=guid, payload=clear), unlock_token=token)
        assert sent == plain(guid, clear, token)
    assert list(command_steps._ENCODED) == [repr(lock)]


async def test_an_inventory_answer_goes_to_the_transaction_without_a_read_first(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, seen: Seen
) -> None:
    device_id = await device_id_of(db, phone.udid)
    queries = {"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}
    guid = await queue_command(db, device_id, queries)
    assert offered(await phone.report(ios)) == guid
    seen.reset()
    answer = {"QueryResponses": {"DeviceName": "Kim's iPhone"}}
    assert offered(await phone.report(ios, "Acknowledged", guid, **answer)) is None
    by_guid = [sql for _, sql in seen.statements if "commands.guid =" in sql]
    assert len(by_guid) == 1 and "FOR UPDATE" in by_guid[0]  # the transaction's locked read only
    command, journal, _ = await command_records(db, guid, event_prefix="command_")
    assert command.status == "completed" and journal == ["processing", "delivered", "completed"]
    async with db.session() as session:
        assert await session.scalar(select(Device.name).where(Device.id == device_id)) == "Kim's iPhone"
