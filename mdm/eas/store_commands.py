"""The SQL of EAS commands (``service_commands``): what a command acts on (the device's
partnerships and mailboxes) and what it changed in them, on the tables of ``mdm.eas.tables``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, events
from mdm.core.device_status import set_status
from mdm.core.event_types import COMMAND_RECALLED
from mdm.db.enums import DeviceStatus
from mdm.db.models import Command, CommandQueueEntry, CommandStatus, Device, utcnow
from mdm.eas.records import DeviceStatistics, WipeState
from mdm.eas.tables import EasMailbox, EasPartnership, EasPolicy


@dataclass(frozen=True, slots=True)
class Target:
    """One partnership of the device and its mailbox, as discovery last saw them."""

    mailbox_id: int
    mailbox: str  # the mailbox's Exchange identity
    partnership: str  # the partnership's Exchange identity
    vanished: bool  # the partnership or its mailbox is no longer listed by Exchange


async def device_identifier(session: AsyncSession, device_id: int) -> str | None:
    return await session.scalar(select(Device.identifier).where(Device.id == device_id))


async def targets(session: AsyncSession, device_id: int) -> list[Target]:
    rows = await session.execute(
        select(EasPartnership.mailbox_id, EasMailbox.identity, EasPartnership.exchange_identity,
               EasPartnership.vanished_at, EasMailbox.vanished_at.label("mb_vanished"))
        .join(EasMailbox, EasMailbox.id == EasPartnership.mailbox_id)
        .where(EasPartnership.device_id == device_id)
        .order_by(EasPartnership.mailbox_id)
    )
    return [Target(r.mailbox_id, r.identity, r.exchange_identity,
                   r.vanished_at is not None or r.mb_vanished is not None) for r in rows]


async def mark_wipe_requested(session: AsyncSession, device_id: int, identities: Sequence[str],
                              at: datetime) -> None:
    """Clear-…Device ran: pending until the device acknowledges (``apply_statistics``)."""
    await session.execute(
        update(EasPartnership)
        .where(EasPartnership.device_id == device_id, EasPartnership.exchange_identity.in_(identities))
        .values(wipe_state=WipeState.PENDING.value, wipe_requested_at=at, wipe_acknowledged_at=None,
                updated_at=at)
    )


async def mark_partnership_vanished(session: AsyncSession, identity: str, now: datetime) -> bool:
    result = await session.execute(
        update(EasPartnership)
        .where(EasPartnership.exchange_identity == identity, EasPartnership.vanished_at.is_(None))
        .values(vanished_at=now, updated_at=now)
        .returning(EasPartnership.device_id)
    )
    return result.first() is not None


async def mark_mailbox_vanished(session: AsyncSession, identity: str, now: datetime) -> bool:
    result = await session.execute(
        update(EasMailbox).where(EasMailbox.identity == identity, EasMailbox.vanished_at.is_(None))
        .values(vanished_at=now, updated_at=now).returning(EasMailbox.id)
    )
    return result.first() is not None


async def set_mailbox(session: AsyncSession, identity: str, *, activesync_enabled: bool | None = None,
                      policy: str | None = None) -> None:
    values: dict[str, object] = {"updated_at": utcnow()}
    if activesync_enabled is not None:
        values["activesync_enabled"] = activesync_enabled
    if policy is not None:
        values["policy"] = policy
    await session.execute(update(EasMailbox).where(EasMailbox.identity == identity).values(values))


async def end_device(session: AsyncSession, device_id: int, command_id: int, now: datetime) -> list[Command]:
    """Remove-…Device ran on every partnership: they are gone from Exchange, the device is no
    longer managed (as a KES/iOS device after its Remove). Returns its other active commands,
    locked, for the caller to fail."""
    await session.execute(
        update(EasPartnership)
        .where(EasPartnership.device_id == device_id, EasPartnership.vanished_at.is_(None))
        .values(vanished_at=now, updated_at=now)
    )
    device = await session.get(Device, device_id, with_for_update=True)
    if device is not None:
        set_status(session, device, DeviceStatus.UNMANAGED, "remove_confirmed")
    rows = await session.scalars(
        select(Command)
        .where(Command.device_id == device_id, Command.active.is_(True), Command.id != command_id)
        .order_by(Command.id).with_for_update()
    )
    return list(rows.all())


async def apply_statistics(session: AsyncSession, device_id: int, stats: Sequence[DeviceStatistics],
                           now: datetime) -> list[DeviceStatistics]:
    """Write what Get-…DeviceStatistics said about the device's partnerships (as discovery does);
    the statistics whose wipe became acknowledged now are returned (the device is then wiped)."""
    acknowledged: list[DeviceStatistics] = []
    for st in stats:
        row = await session.scalar(
            select(EasPartnership).where(EasPartnership.device_id == device_id,
                                         EasPartnership.exchange_identity == st.identity).with_for_update()
        )
        if row is None:
            continue
        state = st.wipe_state
        if state is WipeState.ACKNOWLEDGED and row.wipe_state != WipeState.ACKNOWLEDGED.value:
            acknowledged.append(st)
        # A wipe this service requested stays pending until Exchange shows the acknowledgement.
        if state is WipeState.NONE and row.wipe_state == WipeState.PENDING.value:
            state = WipeState.PENDING
        row.device_type, row.user_agent = st.device_type, st.user_agent
        row.first_sync, row.last_sync = st.first_sync, st.last_sync
        row.last_sync_attempt = st.last_sync_attempt
        row.policy_applied, row.policy_status = st.policy_applied, st.policy_status
        row.access_state, row.status = st.access_state, st.status
        row.wipe_state = state.value
        row.wipe_requested_at = st.wipe_requested or row.wipe_requested_at
        row.wipe_sent_at = st.wipe_sent or row.wipe_sent_at
        row.wipe_acknowledged_at = st.wipe_acknowledged
        row.seen_at = row.updated_at = now
        row.vanished_at = None
    device = await session.get(Device, device_id, with_for_update=True)
    if device is not None and stats:
        first = stats[0]
        device.model = first.model or device.model
        device.os_name = first.os or device.os_name
        device.imei = first.imei or device.imei
        device.name = first.friendly_name or device.name
        syncs = [s.last_sync for s in stats if s.last_sync is not None]
        if syncs:
            device.last_seen_at = max(syncs)
        if acknowledged:
            set_status(session, device, DeviceStatus.WIPED, "wipe_acknowledged")
    return acknowledged


async def policy_names(session: AsyncSession) -> frozenset[str]:
    """The ActiveSync mailbox policies known from Exchange (not vanished)."""
    rows = await session.scalars(select(EasPolicy.name).where(EasPolicy.vanished_at.is_(None)))
    return frozenset(rows.all())


async def finish_recalled(session: AsyncSession, command: Command, detail: str) -> None:
    """A command recalled while it ran and that Exchange never took (the run was deferred): it
    ends ``removed`` now, as a recall before delivery does (``commands.recall``); nothing waits
    for an answer from a device."""
    await session.execute(delete(CommandQueueEntry).where(CommandQueueEntry.command_id == command.id))
    now = utcnow()
    command.status = CommandStatus.REMOVED.value
    command.active = None
    command.finished_at = command.updated_at = now
    command.payload = {}
    commands.journal(session, command, command.status, detail)
    events.emit(session, COMMAND_RECALLED, device_id=command.device_id, command=command.guid,
                command_type=command.type, status=command.status)
