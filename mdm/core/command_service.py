"""Sending commands from the admin side: one device or many, each in one transaction, and the
platforms' pushers woken once it has committed (a push must never announce a command that a
rollback took back; without a pusher the device gets it at its next poll)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mdm.core import commands, devices
from mdm.core import store_devices as store
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, Device

PUSH_REASON = "command"


@dataclass
class BulkOutcome:
    created: list[Command]
    # {"device": id, "reason": why}: devices that cannot take the command, then unknown ids
    skipped: list[dict[str, Any]]


class CommandService:
    def __init__(self, db: Database, translators: Translators, pushers: Pushers) -> None:
        self.db = db
        self.translators = translators
        self.pushers = pushers

    async def send(
        self, device_id: int, type_name: str, args: dict[str, Any] | None, *, by: str | None
    ) -> tuple[Command, CommandJournalEntry]:
        """Queue a command for one device; returns it with its first journal entry."""
        async with self.db.transaction() as session:
            device = await devices.get(session, device_id)
            command, queued = await commands.enqueue_logged(
                session, device, type_name, args, created_by=by, translators=self.translators
            )
            protocol = device.protocol
        await self.pushers.wake(protocol, [device_id], PUSH_REASON)
        return command, queued

    async def send_bulk(
        self,
        type_name: str,
        args: dict[str, Any] | None,
        *,
        device_ids: Sequence[int] | None = None,
        group: int | None = None,
        by: str | None,
    ) -> BulkOutcome:
        """Queue for these devices, the devices of ``group`` and its subgroups, or (neither
        given) every device. Devices that cannot take it and unknown ids are reported as skipped."""
        async with self.db.transaction() as session:
            missing: list[int] = []
            targets: list[Device]
            if device_ids is not None:
                wanted = sorted(set(device_ids))
                targets = await store.devices_by_id(session, wanted)
                found = {d.id for d in targets}
                missing = [i for i in wanted if i not in found]
            elif group is not None:
                targets = await store.devices_in_groups(
                    session, await devices.group_and_descendants(session, group)
                )
            else:
                targets = await store.all_devices(session)
            result = await commands.enqueue_bulk(
                session, targets, type_name, args, created_by=by, translators=self.translators
            )
            protocols = {d.id: d.protocol for d in targets}
        by_protocol: dict[int, list[int]] = {}
        for command in result.created:
            by_protocol.setdefault(protocols[command.device_id], []).append(command.device_id)
        for protocol, ids in by_protocol.items():
            await self.pushers.wake(protocol, ids, PUSH_REASON)
        skipped = result.skipped + [{"device": i, "reason": "no such device"} for i in missing]
        return BulkOutcome(result.created, skipped)
