"""The single-device enqueue (``CommandService.send`` → ``command_enqueue.enqueue_one``, written with
prebuilt statements): the same rows, journal, events and audit as before, the queue-empty hint
cleared here and, on PostgreSQL, on the other replicas; per-device translations still read the
whole device; nothing is written when the command is refused."""

from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import func, select

from mdm.core import audit
from mdm.core.audit import Action, Actor
from mdm.core.command_service import CommandService
from mdm.core.errors import ArgumentsRefused, Conflict, NotFound, Unsupported
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.core.queue_hint import QueueHint
from mdm.db.audit_context import PENDING
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Device, Event, Protocol
from mdm.ios.plugin import TRANSLATOR

PG_URL = os.environ.get("MDM_TEST_DATABASE_URL", "")
TRANSLATORS = Translators()
TRANSLATORS.register(Protocol.IOS, TRANSLATOR)
MDM_PROFILE = "com.example.mdm.enrollment.7"


async def _device(db: Database, protocol: Protocol = Protocol.IOS, identifier: str = "UDID-1") -> int:
    async with db.transaction() as session:
        device = Device(
            protocol=protocol.value, identifier=identifier, os_name="iOS", model="iPhone15,3",
            attributes={"mdm_profile_identifier": MDM_PROFILE},
            inventory={"profiles": {"items": [
                {"PayloadIdentifier": "com.example.wifi", "IsManaged": True, "payloads": []}
            ]}},
        )
        session.add(device)
        await session.flush()
        return device.id


def _service(db: Database) -> CommandService:
    return CommandService(db, TRANSLATORS, Pushers())


async def _counts(db: Database) -> tuple[int, int, int, int]:
    async with db.session() as session:
        return (
            int(await session.scalar(select(func.count()).select_from(Command)) or 0),
            int(await session.scalar(select(func.count()).select_from(CommandQueueEntry)) or 0),
            int(await session.scalar(select(func.count()).select_from(CommandJournalEntry)) or 0),
            int(await session.scalar(select(func.count()).select_from(Event)) or 0),
        )


async def test_send_writes_command_queue_journal_and_event(db: Database) -> None:
    dev = await _device(db)
    command, first = await _service(db).send(dev, "Block", {}, by="admin")
    assert (command.device_id, command.type, command.status) == (dev, "Block", "processing")
    assert command.created_by == "admin"
    assert (first.status, first.detail) == ("processing", "queued")
    async with db.session() as session:
        row = await session.scalar(select(Command).where(Command.guid == command.guid))
        assert row is not None and row.id == command.id and row.active is True
        assert row.payload == command.payload and row.payload  # the translated DeviceLock
        entry = await session.get(CommandQueueEntry, command.id)
        assert entry is not None
        assert (entry.device_id, entry.in_flight, entry.not_now_count) == (dev, False, 0)
        assert entry.priority == row.priority and entry.not_before is None
        journal = list(await session.scalars(
            select(CommandJournalEntry).where(CommandJournalEntry.command_id == row.id)
        ))
        assert [(j.status, j.detail) for j in journal] == [("processing", "queued")]
        created = list(await session.scalars(select(Event).where(Event.type == "command_created")))
        assert [(e.device_id, e.body) for e in created] == [
            (dev, {"command": command.guid, "command_type": "Block", "created_by": "admin"})
        ]


async def test_refusals_write_nothing(db: Database) -> None:
    dev = await _device(db)
    svc = _service(db)
    first, _ = await svc.send(dev, "Block", {}, by="admin")
    before = await _counts(db)
    with pytest.raises(Conflict) as busy:
        await svc.send(dev, "Block", {}, by="admin")
    assert busy.value.details == {"command": first.guid}
    with pytest.raises(NotFound):
        await svc.send(dev + 1000, "Block", {}, by="admin")
    with pytest.raises(Unsupported):
        await svc.send(dev, "EnableActiveSync", {}, by="admin")  # Exchange ActiveSync only
    with pytest.raises(ArgumentsRefused):
        await svc.send(dev, "Alarm", {"duration_seconds": "soon"}, by="admin")
    assert await _counts(db) == before


async def test_a_per_device_translation_reads_the_whole_device(db: Database) -> None:
    """``Remove`` reads the MDM profile identifier or the inventory (no bulk key): the device is
    loaded whole; ``Block`` needs only its facts. Both give what the ORM path gave."""
    dev = await _device(db)
    command, _ = await _service(db).send(dev, "Remove", {}, by="admin")
    assert MDM_PROFILE in str(command.payload)


async def test_the_audit_event_commits_with_the_command(db: Database) -> None:
    dev = await _device(db)
    action = Action(Actor("tester", "api", "127.0.0.1", token_id=1), "send_command", method="POST",
                    route="/api/v1/devices/{id}/commands", target={"id": dev})
    pending = audit.pending(action)
    token = PENDING.set(pending)
    try:
        await _service(db).send(dev, "Block", {}, by="tester")
    finally:
        pending.closed = True
        PENDING.reset(token)
    assert pending.written
    async with db.session() as session:
        audited = list(await session.scalars(select(Event).where(Event.type == "admin_action")))
    assert [(e.body["operation"], e.body["target"]) for e in audited] == [("send_command", {"id": dev})]


async def test_the_queue_empty_hint_is_cleared(db: Database) -> None:
    dev = await _device(db)
    hint = QueueHint(60, 100)
    hint.mark_empty(dev, hint.generation)
    assert hint.known_empty(dev)
    await _service(db).send(dev, "Block", {}, by="admin")
    assert not hint.known_empty(dev)
    assert hint.take_pending(dev)  # its next poll looks for work at once


@pytest.mark.skipif(not PG_URL, reason="LISTEN/NOTIFY needs PostgreSQL")
async def test_other_replicas_are_told(db: Database) -> None:
    import asyncpg

    from mdm.ios.notify import asyncpg_dsn

    dev = await _device(db)
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(db.url))
    await listener.add_listener("mdm_ios_queue", lambda *args: received.put_nowait(args[-1]))
    try:
        await _service(db).send(dev, "Block", {}, by="admin")
        assert await asyncio.wait_for(received.get(), 5) == str(dev)
    finally:
        await listener.close()


async def test_the_wake_up_is_owed_in_the_enqueue_transaction(db: Database) -> None:
    """With the push dispatcher (an ``OwingPusher``) the device's wake-up row commits with its
    command (it cost a transaction of its own, after the commit): on PostgreSQL as a part of the
    enqueue's one statement, no transaction block at all (test_enqueue_statements), on SQLite as a
    statement of its one ``sqlite_direct`` transaction (test_enqueue_sqlite_direct): no session's
    transaction on either; a refused enqueue owes nothing."""
    from push_dispatch_support import ScriptedTransport, add_device

    from mdm.push.config import PushConfig
    from mdm.push.dispatcher import PushDispatcher
    from mdm.push.tables import PushWakeup

    dev = await add_device(db, "pushed", token="ab" * 32)
    pushers = Pushers()
    pushers.register(Protocol.IOS, PushDispatcher(db, PushConfig(), {Protocol.IOS: ScriptedTransport()}))
    svc = CommandService(db, TRANSLATORS, pushers)
    opened = 0
    plain = db.transaction

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal opened
        opened += 1
        return plain(*args, **kwargs)  # type: ignore[arg-type]

    db.transaction = counted  # type: ignore[method-assign]
    try:
        await svc.send(dev, "Block", {}, by="admin")
        assert opened == 0
        with pytest.raises(Conflict):
            await svc.send(dev, "Block", {}, by="admin")
    finally:
        db.transaction = plain  # type: ignore[method-assign]
    async with db.session() as session:
        w = PushWakeup
        owed = list(await session.execute(select(w.device_id, w.reason, w.requests)))
    assert [tuple(row) for row in owed] == [(dev, "command", 1)]
