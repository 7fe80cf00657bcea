"""The command channel (``PUT /mdm/server``): record the device's report, hand out the next command.

Order: priority, then age (queue row id). One command per response, as the plist
``{"CommandUUID": ..., "Command": payload}``; an empty 200 when there is nothing to do.

NotNow: the command stays queued with ``not_before`` = now + back-off and a re-push is scheduled
for that time. Within the same exchange (the device's following non-Idle reports) deferred
commands are skipped; the next ``Idle`` report starts a new exchange in which every queued
command is offered again in its original order (the semantics real devices expect: NotNow means
"not in this session"). A command delivered but never answered is offered again at the next Idle.

Replays: a report is accepted only for a command of this device that is in flight (delivered and
not yet answered). A report for a finished, deferred or never-delivered command is a replay or a
confused device: 400, nothing changes.

Multi-step commands (the translator's ``{"Steps": [...]}``) go out one step per response with
CommandUUID ``GUID.N`` (``mdm.ios.command_steps.outgoing``); each answer but the last is recorded with
``core.commands.step_done`` and the next step follows in the same response.

On PostgreSQL an Idle poll that hands out a plain command, and a final answer that changes only
its command or is an inventory answer, run without a transaction block (``mdm.ios.channel_direct``);
the rest, and whatever changed meanwhile, takes the transactional path below. On SQLite the same
two steps, for a plain command and a final answer to a command this process delivered, are one
write transaction each without SQLAlchemy's session (``mdm.ios.channel_sqlite``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, delivery_direct, events, in_flight, library
from mdm.core.commands import step_index
from mdm.core.device_status import set_status
from mdm.core.errors import InvalidArgument, ServiceError
from mdm.core.identity import Binding
from mdm.db.models import Command, DeviceStatus, Protocol
from mdm.ios import channel_direct, channel_sqlite, command_steps, inventory, store
from mdm.ios.channel_direct import DEVICE_CHANGING as DEVICE_CHANGING
from mdm.ios.channel_direct import MDM_PROFILE_REMOVAL, changed_device, kept_for_answer, outcome, plain_final
from mdm.ios.event_types import DEVICE_UNMANAGED, DEVICE_WIPED, INVENTORY_UPDATED
from mdm.ios.messages import CommandReport, MessageError
from mdm.ios.push_seam import backoff, schedule_push
from mdm.ios.service import IosService

log = logging.getLogger("mdm.ios.channel")

class ReplayError(MessageError):
    code = "replayed"


class ChannelResult:
    __slots__ = ("body",)

    def __init__(self, body: bytes = b"") -> None:
        self.body = body


EMPTY = ChannelResult()


async def handle(svc: IosService, binding: Binding, report: CommandReport) -> ChannelResult:
    if report.is_idle:
        if report.user_id:
            return EMPTY  # no user-channel commands are queued by this service
        return await _idle(svc, binding.device_id)
    if channel_direct.supported(svc.engine):
        others = await channel_direct.answer(svc.engine, binding, report)
        if others is not None:  # answered (PostgreSQL, no transaction block)
            return await _deliver(svc, binding.device_id) if others else EMPTY
    elif channel_sqlite.supported(svc.db):
        others = await channel_sqlite.answer(svc.db, binding, report)
        if others is not None:  # answered (SQLite, without the session)
            return await _claimed(svc, binding.device_id, ready_only=True) if others else EMPTY
    async with svc.db.transaction(inline=True) as session:
        due = await _record(svc, session, binding, report)
        if commands.queue_drained(session, binding.device_id):
            result = EMPTY  # the answer took the last queued command: nothing to look for
        else:
            result = await _next(svc, session, binding.device_id, ready_only=True)
    if due is not None:  # after the commit: the deferral it announces is durable now
        await svc.pushers.wake_at(Protocol.IOS, binding.device_id, due, "notnow")
    return result


async def _idle(svc: IosService, device_id: int) -> ChannelResult:
    hint = svc.hint
    if hint.enabled and hint.known_empty(device_id):
        return EMPTY
    generation = hint.generation
    if channel_direct.supported(svc.engine):
        # PostgreSQL: the next command read and, if still queued as read, delivered, without a
        # transaction block (no separate look first).
        hint.take_pending(device_id)
        body = await channel_direct.deliver(svc.engine, device_id, ready_only=False)
        if body == b"":
            hint.mark_empty(device_id, generation)
            return EMPTY
        if body is not None:
            return ChannelResult(body)
    if hint.take_pending(device_id):
        # Just queued (the push that woke the device): no read-only look first.
        result = await _claimed(svc, device_id, ready_only=False)
        if result is EMPTY:
            hint.mark_empty(device_id, generation)
        return result
    command_id = await store.peek_next_command(svc.engine, device_id)
    if command_id is None:
        hint.mark_empty(device_id, generation)
        return EMPTY
    return await _claimed(svc, device_id, ready_only=False, first=command_id)


async def _claimed(
    svc: IosService, device_id: int, *, ready_only: bool, first: int | None = None
) -> ChannelResult:
    """``_next`` in a transaction of its own: on SQLite without the session when the command is
    plain to send (``channel_sqlite``)."""
    if channel_sqlite.supported(svc.db):
        body = await channel_sqlite.deliver(svc.db, device_id, first=first, ready_only=ready_only)
        if body is not None:
            return ChannelResult(body) if body else EMPTY
    async with svc.db.transaction(inline=True) as session:
        return await _next(svc, session, device_id, ready_only=ready_only, first=first)


async def _deliver(svc: IosService, device_id: int) -> ChannelResult:
    """The next command not deferred by a NotNow after an answer (PostgreSQL, outside the
    answer's statement): without a transaction block when it is plain to send."""
    body = await channel_direct.deliver(svc.engine, device_id, ready_only=True)
    if body is not None:
        return ChannelResult(body) if body else EMPTY
    async with svc.db.transaction(inline=True) as session:
        return await _next(svc, session, device_id, ready_only=True)


async def _next(
    svc: IosService,
    session: AsyncSession, device_id: int, *, ready_only: bool, first: int | None = None
) -> ChannelResult:
    """Deliver the first deliverable command (in the caller's transaction). ``first``: the id a
    query just outside the transaction found, re-checked here under the row lock."""
    for _ in range(50):  # undeliverable commands are failed and skipped; bounded
        command_id, first = first, None
        if command_id is None:
            found, command = await commands.claim_next(session, device_id, ready_only=ready_only)
            if not found:
                return EMPTY  # callers may record "empty": only a query that found nothing says so
        else:
            command = await commands.claim(session, command_id)
        if command is None:
            continue  # handled meanwhile by a concurrent request: look again
        body = await _encode(svc, session, command, device_id)
        if body is not None:
            await commands.delivered(session, command)
            if kept_for_answer(svc.engine, command):
                in_flight.remember(svc.engine, command)
            return ChannelResult(body)
    return ChannelResult()  # gave up after 50 undeliverable commands: not "the queue is empty"


async def _encode(svc: IosService, session: AsyncSession, command: Command, device_id: int) -> bytes | None:
    """The plist of the step due now, or None after failing a command that cannot be sent."""
    payload = dict(command.payload or {})
    if not payload:
        payload = await _late_translation(svc, session, command, device_id)
    steps = command_steps.steps_of(payload)
    current = steps[min(step_index(command), len(steps) - 1)]
    problem = None
    unlock_token = None
    if not isinstance(current.get("RequestType"), str):
        problem = f"no iOS translation for {command.type}; it cannot be sent"
    elif current["RequestType"] == "ClearPasscode" and "UnlockToken" not in current:
        ios = await store.ios_device(session, device_id)
        unlock_token = ios.unlock_token if ios is not None else None
        if unlock_token is None:
            problem = "the device sent no UnlockToken; its passcode cannot be cleared"
    if problem is None:
        try:
            return command_steps.message(command, unlock_token=unlock_token)
        except (TypeError, ValueError, OverflowError) as exc:
            problem = f"the command payload cannot be encoded as a property list: {exc}"
    log.warning("command %s not sent: %s", command.guid, problem)
    commands.unclaim(command)
    await commands.complete(session, command, success=False, info=problem)
    return None


async def _late_translation(
    svc: IosService, session: AsyncSession, command: Command, device_id: int
) -> dict[str, Any]:
    """Commands queued before the iOS translator was registered are translated at delivery."""
    if command.type == "Raw" and isinstance((command.args or {}).get("RequestType"), str):
        return dict(command.args)
    device = await store.device(session, device_id)
    translator = svc.translators.get(device.protocol) if device is not None else None
    if device is None or translator is None:
        return {}
    try:
        command_type = library.lookup(command.type)
        library.check_supported(command_type, device)
        payload = translator.translate(command_type.name, dict(command.args or {}), device)
    except ServiceError as exc:
        log.info("late translation of %s failed: %s", command.guid, exc.message)
        return {}
    command.payload = payload
    return payload


# ---- reports ----------------------------------------------------------------------------------


async def _record(
    svc: IosService, session: AsyncSession, binding: Binding, report: CommandReport
) -> datetime | None:
    """Record the report; for a NotNow, the time a wake-up push is due (else None)."""
    assert report.command_uuid is not None
    guid, _ = command_steps.split_command_uuid(report.command_uuid)
    known = in_flight.take(svc.engine, guid)  # as this process delivered it, not read
    final = None if known is None else plain_final(known, binding, report)
    if known is not None and final is not None:
        success, info, data = final
        if await delivery_direct.complete_known(session, known, success=success, info=info, data=data):
            return None
    command = await commands.lock_by_guid(session, guid)
    if command is None or command.device_id != binding.device_id:
        raise InvalidArgument(f"no command {report.command_uuid[:64]} for this device")
    step = command_steps.answered_step(command, report.command_uuid)
    if step is None:
        raise _replay(report.command_uuid, command)
    request_type, last = step
    if last and report.status != "NotNow":
        # The final answer (the common case): complete() takes the row out of the queue, which
        # also proves the command was in flight; if it was not, the transaction rolls back.
        if not await _answered(session, binding, command, report, request_type, commands.complete, take=True):
            raise _replay(report.command_uuid, command)
        return None
    entry = await store.lock_queue_entry(session, command.id)
    if entry is None or not entry.in_flight:
        raise _replay(report.command_uuid, command)
    if report.status == "NotNow":
        delay = backoff(
            entry.not_now_count + 1, svc.config.notnow_backoff_seconds, svc.config.notnow_backoff_max_seconds
        )
        await commands.defer(session, command, delay, f"device busy (NotNow); offered again after {delay}")
        return await schedule_push(session, binding.device_id, delay, "notnow")
    await _answered(session, binding, command, report, request_type, commands.step_done)
    return None


def _replay(command_uuid: str, command: Command) -> ReplayError:
    return ReplayError(
        f"command {command_uuid[:64]} is not awaiting an answer ({command.status});"
        " replayed or duplicate report",
        command=command.guid,
    )


async def _answered(
    session: AsyncSession,
    binding: Binding,
    command: Command,
    report: CommandReport,
    request_type: str,
    finish: Any,
    **options: Any,
) -> bool:
    """Acknowledged, Error or CommandFormatError for the step ``request_type``; what ``finish``
    answers (False: not in flight)."""
    success, info, data = outcome(report)
    if report.status == "Acknowledged":
        await _acknowledged(session, binding, command, report, request_type)
    return bool(await finish(session, command, success=success, info=info, data=data, **options))


async def _acknowledged(
    session: AsyncSession, binding: Binding, command: Command, report: CommandReport, step_type: str
) -> None:
    step = command_steps.current_step(command)
    request_type = changed_device(command, report, step_type)
    if request_type is None:
        return
    if request_type in inventory.PART_NAMES:
        # Core: the columns the answer may change, one UPDATE of the part and the changed ones.
        current = await store.lock_device_columns(session, binding.device_id, inventory.FACT_COLUMNS)
        update = None if current is None else inventory.answer_update(current, request_type, report.result)
        if update is not None:
            await store.write_inventory(session, binding.device_id, update.part, update.entry, update.changes)
            await events.emit_now(
                session, INVENTORY_UPDATED, device_id=binding.device_id, part=update.part, count=update.count
            )
        return
    device = await store.device(session, binding.device_id, lock=True)
    if device is None:
        return
    if request_type == "EraseDevice":
        set_status(session, device, DeviceStatus.WIPED, "wipe_confirmed")
        events.emit(session, DEVICE_WIPED, device_id=device.id, command=command.guid)
    elif command.type == "Remove" or (
        request_type == MDM_PROFILE_REMOVAL
        and step.get("Identifier") is not None
        and step.get("Identifier") == inventory.mdm_profile_identifier(device)
    ):
        set_status(session, device, DeviceStatus.UNMANAGED, "remove_confirmed")
        device.push_valid = False
        events.emit(session, DEVICE_UNMANAGED, device_id=device.id, command=command.guid)
