"""A command's queue and journal rows leave with it: with its device (``devices → commands``,
ON DELETE CASCADE) and when the command itself is deleted, one or many per statement. Since
migration 0020 neither table has a foreign key to ``commands`` (its insert check cost PostgreSQL a
trigger call and a row lock per queued command); the trigger ``commands_gone`` deletes them.
Real SQLite or PostgreSQL."""

from __future__ import annotations

from bulk_support import add_devices, count
from sqlalchemy import delete, inspect, select

from mdm.core import devices
from mdm.core.bulk import BulkService
from mdm.core.command_service import CommandService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Protocol
from mdm.ios.commands import IosCommandTranslator


def _translators() -> Translators:
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    return translators


async def _queue_everywhere(db: Database, n: int) -> tuple[list[int], int]:
    """``n`` devices, each with a bulk Block and a single Alarm queued; the bulk id."""
    ids = await add_devices(db, n)
    svc = BulkService(db, _translators(), Pushers(), batch_size=3)
    op = await svc.create("Block", {}, by="test")
    while await svc.step(op.id):
        pass
    single = CommandService(db, _translators(), Pushers())
    for device_id in ids:
        await single.send(device_id, "Alarm", {}, by="test")
    return ids, op.id


async def _rows_of(db: Database, command_ids: object) -> tuple[int, int]:
    queue = select(CommandQueueEntry).where(CommandQueueEntry.command_id.in_(command_ids))  # type: ignore[arg-type]
    journal = select(CommandJournalEntry).where(CommandJournalEntry.command_id.in_(command_ids))  # type: ignore[arg-type]
    return await count(db, queue), await count(db, journal)


async def _orphans(db: Database) -> tuple[int, int]:
    known = select(Command.id)
    return (
        await count(db, select(CommandQueueEntry).where(CommandQueueEntry.command_id.not_in(known))),
        await count(db, select(CommandJournalEntry).where(CommandJournalEntry.command_id.not_in(known))),
    )


async def test_a_deleted_devices_commands_take_their_queue_and_journal_rows(db: Database) -> None:
    ids, _ = await _queue_everywhere(db, 5)
    of_device = select(Command.id).where(Command.device_id == ids[1])
    assert await _rows_of(db, of_device) == (2, 2)

    async with db.transaction() as session:
        await devices.delete(session, ids[1], by="test")

    assert await count(db, select(Command).where(Command.device_id == ids[1])) == 0
    assert await _orphans(db) == (0, 0)
    # The other devices keep theirs.
    assert await count(db, select(CommandQueueEntry)) == 8
    assert await count(db, select(CommandJournalEntry)) == 8


async def test_a_command_deleted_on_its_own_takes_its_rows_and_no_other(db: Database) -> None:
    ids, _ = await _queue_everywhere(db, 3)
    one = await count(db, select(Command.id).where(Command.device_id == ids[0]))
    assert one == 2
    async with db.session() as session:
        first = int(await session.scalar(
            select(Command.id).where(Command.device_id == ids[0]).order_by(Command.id).limit(1)
        ) or 0)

    async with db.transaction() as session:
        await session.execute(delete(Command).where(Command.id == first))

    assert await _rows_of(db, [first]) == (0, 0)
    assert await _rows_of(db, select(Command.id).where(Command.device_id == ids[0])) == (1, 1)
    assert await _orphans(db) == (0, 0)
    assert await count(db, select(CommandQueueEntry)) == 5


async def test_many_commands_deleted_by_one_statement_take_all_their_rows(db: Database) -> None:
    ids, bulk_id = await _queue_everywhere(db, 7)
    async with db.transaction() as session:
        await session.execute(delete(Command).where(Command.bulk_id == bulk_id))

    assert await count(db, select(Command)) == 7  # the single Alarm commands
    assert await _orphans(db) == (0, 0)
    assert await count(db, select(CommandQueueEntry)) == 7
    assert await count(db, select(CommandJournalEntry)) == 7
    assert await count(db, select(CommandQueueEntry).where(CommandQueueEntry.device_id.in_(ids))) == 7


async def test_the_queue_and_the_journal_have_no_foreign_key_to_commands(db: Database) -> None:
    """What this file pins is the trigger's work, not a cascade of a foreign key."""
    async with db.engine.connect() as conn:
        keys = await conn.run_sync(lambda c: {
            t: [fk["referred_table"] for fk in inspect(c).get_foreign_keys(t)]
            for t in ("command_queue", "command_journal", "commands")
        })
    assert keys == {"command_queue": [], "command_journal": [], "commands": ["devices"]}
