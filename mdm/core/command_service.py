"""Sending a command to one device from the admin side, in one transaction, and the platform's
pusher woken once it has committed (a push must never announce a command that a rollback took
back; without a pusher the device gets it at its next poll): a pusher that keeps its wake-ups as
rows (``OwingPusher``) owes it in that transaction and is nudged after the commit, any other is
called after the commit. Many devices: ``mdm.core.bulk``."""

from __future__ import annotations

from typing import Any

from mdm.core import commands, library
from mdm.core.errors import ArgumentsRefused, InvalidArgument
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry

PUSH_REASON = "command"


class CommandService:
    def __init__(self, db: Database, translators: Translators, pushers: Pushers) -> None:
        self.db = db
        self.translators = translators
        self.pushers = pushers

    async def send(
        self, device_id: int, type_name: str, args: dict[str, Any] | None, *, by: str | None
    ) -> tuple[Command, CommandJournalEntry]:
        """Queue a command for one device; returns it with its first journal entry. Arguments
        the command type refuses for this device are 422, as in a bulk operation."""
        library.lookup(type_name)  # an unknown type is a bad request (400), not refused arguments
        try:
            async with self.db.transaction(inline=True) as session:
                command, queued, protocol = await commands.enqueue_one(
                    session, device_id, type_name, args, created_by=by, translators=self.translators
                )
                # A pusher that keeps its wake-ups as rows owes this one in the same transaction
                # (no write transaction of its own after the commit, nothing to lose between).
                owed = await self.pushers.owe(session, protocol, [device_id], PUSH_REASON)
        except InvalidArgument as exc:
            raise ArgumentsRefused(exc.message, **exc.details) from None
        if owed:
            self.pushers.owed([protocol])
        else:
            await self.pushers.wake(protocol, [device_id], PUSH_REASON)
        return command, queued
