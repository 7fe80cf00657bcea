"""Sending a command to one device from the admin side, in one transaction, and the platform's
pusher woken once it has committed (a push must never announce a command that a rollback took
back; without a pusher the device gets it at its next poll): a pusher that keeps its wake-ups as
rows (``OwingPusher``) owes it in that transaction and is nudged after the commit, any other is
called after the commit. Many devices: ``mdm.core.bulk``."""

from __future__ import annotations

from typing import Any, cast

from mdm.core import command_enqueue, enqueue_direct, enqueue_sqlite, library
from mdm.core.errors import ArgumentsRefused, InvalidArgument
from mdm.core.library import Translators
from mdm.core.push import OwedPart, OwingPusher, PartOwingPusher, Pushers
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, Protocol
from mdm.db.prepared import autocommit, autocommits

PUSH_REASON = "command"
# The common enqueue without a session: on PostgreSQL one statement outside a transaction block,
# on SQLite one ``sqlite_direct`` transaction (tests turn it off to exercise the transactional
# path alone).
DIRECT = True


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
            written = await self._direct(device_id, type_name, args, by)
            if written is not None:
                command, queued, protocol = written
                owed = not self._plain(protocol)  # then the statement owed it (``_owed_part``)
            else:
                async with self.db.transaction(inline=True) as session:
                    command, queued, protocol = await command_enqueue.enqueue_one(
                        session, device_id, type_name, args, created_by=by, translators=self.translators
                    )
                    # A pusher that keeps its wake-ups as rows owes this one in the same
                    # transaction (no write transaction of its own after the commit).
                    owed = await self.pushers.owe(session, protocol, [device_id], PUSH_REASON)
        except InvalidArgument as exc:
            raise ArgumentsRefused(exc.message, **exc.details) from None
        if owed:
            self.pushers.owed([protocol])
        else:
            await self.pushers.wake(protocol, [device_id], PUSH_REASON)
        return command, queued

    async def _direct(
        self, device_id: int, type_name: str, args: dict[str, Any] | None, by: str | None
    ) -> tuple[Command, CommandJournalEntry, Protocol] | None:
        """The common case without a session: on PostgreSQL one statement outside a transaction
        block (``mdm.core.enqueue_direct``), on SQLite one ``sqlite_direct`` transaction
        (``mdm.core.enqueue_sqlite``); None, nothing written, where it does not apply."""
        if not DIRECT:
            return None
        if enqueue_sqlite.supported(self.db):
            return await enqueue_sqlite.enqueue_one(
                self.db, device_id, type_name, args, created_by=by, translators=self.translators,
                plain=self._plain, owed=self._owed_sqlite,
            )
        if not autocommits(self.db.engine):
            return None
        async with autocommit(self.db.engine) as conn:
            return await enqueue_direct.enqueue_one(
                conn, device_id, type_name, args, created_by=by, translators=self.translators,
                plain=self._plain, owed=self._owed_pg,
            )

    def _plain(self, protocol: Protocol) -> bool:
        """Whether this protocol's wake-up needs nothing in the enqueue's transaction."""
        pusher = self.pushers.get(protocol)
        kind = type(pusher)
        plain = _PLAIN.get(kind)
        if plain is None:  # isinstance of a runtime-checkable protocol: ~30 µs, once per class
            plain = _PLAIN[kind] = not isinstance(pusher, OwingPusher)
        return plain

    def _owed_pg(self, protocol: Protocol) -> OwedPart | None:
        return self._owed_part(protocol, "postgresql")

    def _owed_sqlite(self, protocol: Protocol) -> OwedPart | None:
        return self._owed_part(protocol, "sqlite")

    def _owed_part(self, protocol: Protocol, dialect: str) -> OwedPart | None:
        """This protocol's wake-up as a part of the enqueue's one statement (PostgreSQL) or
        transaction (SQLite), or None when its pusher cannot write it so (then it is owed in the
        transactional path)."""
        pusher = self.pushers.get(protocol)
        kind = type(pusher)
        parts = _PARTS.get(kind)
        if parts is None:  # (as ``_plain``: once per class)
            parts = _PARTS[kind] = isinstance(pusher, PartOwingPusher)
        return cast(PartOwingPusher, pusher).owed_part(PUSH_REASON, dialect) if parts else None


_PLAIN: dict[type, bool] = {}
_PARTS: dict[type, bool] = {}
