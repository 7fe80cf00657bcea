"""The command queue's rows belong to their command's device: written only from it (a single
enqueue, a bulk batch), and gone when the device is deleted, through the command (migration 0019
dropped ``command_queue.device_id``'s own foreign key: ``commands → devices`` ON DELETE CASCADE,
then the trigger ``commands_gone`` of migration 0020, is the one path; see also
``test_command_rows_cascade.py``). Real SQLite or PostgreSQL."""

from __future__ import annotations

from bulk_support import add_devices, count
from sqlalchemy import select

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


async def test_queue_rows_are_their_commands_devices_and_leave_with_the_device(db: Database) -> None:
    ids = await add_devices(db, 6)
    svc = BulkService(db, _translators(), Pushers(), batch_size=4)
    op = await svc.create("Block", {}, by="test")
    while await svc.step(op.id):
        pass
    single = CommandService(db, _translators(), Pushers())
    await single.send(ids[2], "Alarm", {}, by="test")
    await single.send(ids[3], "Alarm", {}, by="test")
    mismatched = (
        select(CommandQueueEntry.command_id).join(Command, Command.id == CommandQueueEntry.command_id)
        .where(Command.device_id != CommandQueueEntry.device_id)
    )
    assert await count(db, select(CommandQueueEntry)) == 8
    assert await count(db, mismatched) == 0

    async with db.transaction() as session:
        await devices.delete(session, ids[2], by="test")
    assert await count(db, select(CommandQueueEntry).where(CommandQueueEntry.device_id == ids[2])) == 0
    assert await count(db, select(Command).where(Command.device_id == ids[2])) == 0
    orphans = select(CommandJournalEntry).where(CommandJournalEntry.command_id.not_in(select(Command.id)))
    assert await count(db, orphans) == 0
    # The other devices keep theirs.
    assert await count(db, select(CommandQueueEntry)) == 6
    assert await count(db, select(CommandQueueEntry).where(CommandQueueEntry.device_id == ids[3])) == 2
