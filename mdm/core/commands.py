"""Command life cycle: recall, delivery bookkeeping, completion, and the command log (a new
command is queued by ``mdm.core.command_enqueue``).

Statuses follow the reference product: ``processing`` while queued or in flight, then
``completed`` / ``failed``; a recall makes it ``removed`` at once when not yet delivered, or
``removing`` while the device holds it, ending in ``remove_failed`` if the device answers anyway.
Every status change adds a journal row and an event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events, store_events
from mdm.core import store_commands as store
from mdm.core.errors import Conflict, NotFound
from mdm.core.event_types import (
    COMMAND_COMPLETED,
    COMMAND_DELIVERED,
    COMMAND_FAILED,
    COMMAND_RECALLED,
)
from mdm.db.models import Command, CommandJournalEntry, CommandStatus, utcnow

FINAL_STATUSES = {
    CommandStatus.COMPLETED,
    CommandStatus.FAILED,
    CommandStatus.REMOVED,
    CommandStatus.REMOVE_FAILED,
}


def journal(
    session: AsyncSession, command: Command, status: str, detail: str | None = None
) -> CommandJournalEntry:
    return store.add_journal(session, command.id, status, detail)


async def get_by_guid(session: AsyncSession, guid: str, *, for_update: bool = False) -> Command:
    command = await store.by_guid(session, guid.upper(), for_update=for_update)
    if command is None:
        raise NotFound(f"no command {guid}")
    return command


def _finish(session: AsyncSession, command: Command, status: CommandStatus) -> None:
    command.status = status.value
    command.active = None
    command.finished_at = command.updated_at = utcnow()
    # The protocol payload is only needed for delivery, and it can carry secrets (a PKCS#12 with
    # its password, Wi-Fi keys); the masked arguments and the result stay for the command log.
    command.payload = {}


async def recall(session: AsyncSession, guid: str, *, by: str | None = None) -> Command:
    command = await get_by_guid(session, guid, for_update=True)
    if CommandStatus(command.status) in FINAL_STATUSES:
        raise Conflict(f"command {command.guid} is already {command.status}; nothing to recall")
    if command.status == CommandStatus.REMOVING:
        return command
    entry = await store.queue_entry(session, command.id)
    if entry is not None and entry.in_flight:
        command.status = CommandStatus.REMOVING.value
        command.updated_at = utcnow()
        journal(session, command, command.status, f"recall requested by {by or 'unknown'}; device holds it")
    else:
        if entry is not None:
            await store.delete_queue_entry(session, entry)
        done = step_index(command)
        if done:
            _finish(session, command, CommandStatus.REMOVE_FAILED)
            journal(session, command, command.status,
                    f"recalled by {by or 'unknown'} after {done} step(s) had run; the rest were dropped")
        else:
            _finish(session, command, CommandStatus.REMOVED)
            journal(session, command, command.status, f"recalled by {by or 'unknown'} before delivery")
    events.emit(
        session,
        COMMAND_RECALLED,
        device_id=command.device_id,
        command=command.guid,
        command_type=command.type,
        status=command.status,
    )
    return command


async def recall_logged(
    session: AsyncSession, guid: str, *, by: str | None = None
) -> tuple[Command, list[CommandJournalEntry]]:
    """``recall`` and the command's whole journal with the recall's entry (what the API answers)."""
    command = await recall(session, guid, by=by)
    await session.flush()
    return command, await journal_of(session, command.id)


# ---- used by protocol command channels ---------------------------------------------------------


async def next_command(session: AsyncSession, device_id: int, *, skip: Sequence[int] = ()) -> Command | None:
    """The next deliverable command: priority first, then age; NotNow'd ones wait their turn."""
    return await store.next_command(session, device_id, skip=skip)


async def claim(session: AsyncSession, command_id: int) -> Command | None:
    """Lock a queued command for delivery and count the attempt, in one UPDATE ... RETURNING;
    None when it is no longer ``processing`` (a concurrent request got there first). Follow with
    ``delivered`` once the protocol message is built, or ``unclaim`` if it cannot be."""
    return await store.claim(session, command_id)


async def claim_next(
    session: AsyncSession, device_id: int, *, ready_only: bool
) -> tuple[bool, Command | None]:
    """Find the device's next deliverable command (priority, then age; ``ready_only``: none
    that a NotNow deferred) and ``claim`` it, in one statement: (found, claimed). Found but not
    claimed: a concurrent request got there first, look again."""
    return await store.claim_next(session, device_id, ready_only=ready_only)


async def lock_by_guid(session: AsyncSession, guid: str) -> Command | None:
    """The command with this GUID, row-locked (PostgreSQL) for the rest of the transaction."""
    return await store.lock_by_guid(session, guid)


def unclaim(command: Command) -> None:
    """Undo ``claim``'s count for a command that was not sent after all."""
    command.attempts -= 1
    if command.attempts == 0:
        command.delivered_at = None


async def delivered(session: AsyncSession, command: Command) -> None:
    """The claimed command went out: it is in flight until the device answers. Its first
    delivery is journaled and reported (``command_delivered``); a redelivery after NotNow is not."""
    event = None
    if command.attempts == 1:
        event = events.event_values(
            COMMAND_DELIVERED, device_id=command.device_id, command=command.guid, command_type=command.type
        )
    await store.mark_delivered(session, command.id, event)


def queue_drained(session: AsyncSession, device_id: int) -> bool:
    """Whether a final answer in this transaction took the device's last queued command: no
    next command to look for (``store_commands.drained``)."""
    return store.drained(session, device_id)


async def defer(session: AsyncSession, command: Command, delay: timedelta, detail: str) -> None:
    """The device said NotNow: keep it queued, not offered again before ``delay`` has passed."""
    entry = await store.queue_entry(session, command.id)
    if entry is None:
        return
    entry.in_flight = False
    entry.not_now_count += 1
    entry.not_before = utcnow() + delay
    command.updated_at = utcnow()
    journal(session, command, "not_now", detail)


async def take_in_flight(session: AsyncSession, command_id: int) -> bool:
    """Remove an in-flight command from the queue; False if it was not in flight (a replayed or
    duplicate answer). One DELETE ... RETURNING both checks and removes."""
    return await store.take_in_flight(session, command_id)


async def complete(
    session: AsyncSession,
    command: Command,
    *,
    success: bool,
    info: str | None = None,
    data: dict[str, Any] | None = None,
    dequeued: bool = False,
    take: bool = False,
) -> bool:
    """Record the device's final answer and move the command out of the hot queue.

    For a multi-step command this is the answer of the last step: the result gathers every
    step's answer (``result_data["steps"]``) and the command succeeds only if every step did.

    ``dequeued``: the caller already took the row out of the queue (``take_in_flight``).
    ``take``: take it out only if it is in flight (as ``take_in_flight``), in the statement that
    records the answer on PostgreSQL; False, and nothing written, if it was not in flight (a
    replayed or duplicate answer). Otherwise True.
    """
    if not dequeued and not take:
        await store.dequeue(session, command.id)
    values, journaled, event = completion(command, success=success, info=info, data=data)
    if take:
        return await store.take_and_finish(session, command, values, journaled, event)
    await store.finish_command(session, command, values)
    await store.insert_journal(session, command.id, *journaled)
    await store_events.insert_event(session, event)
    return True


def completion(
    command: Command, *, success: bool, info: str | None, data: dict[str, Any] | None
) -> tuple[dict[str, Any], tuple[str, str | None], dict[str, Any]]:
    """What ``complete`` writes for the final answer: the command's ``FINISH_COLUMNS``, its
    journal entry (status, detail) and the outbox row of its event (nothing is written here)."""
    previous = step_results(command)
    if previous:
        steps = [*previous, _step(success, info, data)]
        failed = [f"step {i}: {s['info'] or 'failed'}" for i, s in enumerate(steps, 1) if not s["ok"]]
        success = not failed
        info = f"{len(steps) - len(failed)} of {len(steps)} steps succeeded" + (
            f"; {'; '.join(failed)}" if failed else "")
        data = {"steps": steps}
    if command.status == CommandStatus.REMOVING:
        status = CommandStatus.REMOVE_FAILED
        info = (info or "") + " (device executed it before the recall reached it)"
    else:
        status = CommandStatus.COMPLETED if success else CommandStatus.FAILED
    # Core statements, not a flush: the command row, its journal entry, the event, in this order.
    now = utcnow()
    values = {
        "status": status.value,
        "active": None,
        "finished_at": now,
        "updated_at": now,
        # As _finish: the payload may carry secrets and is only needed for delivery.
        "payload": {},
        "result_info": info,
        "result_data": data,
    }
    event = events.event_values(
        COMMAND_COMPLETED if status == CommandStatus.COMPLETED else COMMAND_FAILED,
        device_id=command.device_id,
        command=command.guid,
        command_type=command.type,
        status=status.value,
        info=info,
    )
    return values, (status.value, info), event


# ---- multi-step commands -----------------------------------------------------------------------
# A translator may turn one library command into several protocol commands (an iOS
# RefreshDeviceInfo is DeviceInformation, SecurityInfo, ProfileList...; a SoftWipe is one removal
# per managed item). It stays ONE command (one row, one status, one journal); the channel delivers
# its steps one at a time, reports each answer but the last with ``step_done`` and the last with
# ``complete``. Answers so far live in ``result_data["steps"]``: their count is the index of the
# step to deliver next, so a NotNow (``defer``) simply offers the same step again later.


def _step(success: bool, info: str | None, data: dict[str, Any] | None) -> dict[str, Any]:
    return {"ok": success, "info": info, "data": data}


def step_results(command: Command) -> list[dict[str, Any]]:
    steps = (command.result_data or {}).get("steps")
    return list(steps) if isinstance(steps, list) else []


def step_index(command: Command) -> int:
    """Index (0-based) of the step of a multi-step command to deliver next."""
    return len(step_results(command))


async def step_done(
    session: AsyncSession,
    command: Command,
    *,
    success: bool,
    info: str | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Record the answer of a step that is not the last; the next step is offered at the next
    poll. Returns False if a recall arrived meanwhile: the remaining steps are dropped and the
    command ends ``remove_failed`` (the device ran part of it)."""
    steps = [*step_results(command), _step(success, info, data)]
    command.result_data = {"steps": steps}
    command.updated_at = utcnow()
    detail = f"step {len(steps)} {'done' if success else 'failed'}" + (f": {info}" if info else "")
    if command.status == CommandStatus.REMOVING:
        await store.dequeue(session, command.id)
        command.result_info = f"recalled after {len(steps)} step(s) had run; the rest were dropped"
        _finish(session, command, CommandStatus.REMOVE_FAILED)
        journal(session, command, CommandStatus.REMOVE_FAILED.value, f"{detail}; {command.result_info}")
        events.emit(
            session,
            COMMAND_FAILED,
            device_id=command.device_id,
            command=command.guid,
            command_type=command.type,
            status=command.status,
            info=command.result_info,
        )
        return False
    await store.release_step(session, command.id)
    journal(session, command, "step", detail)
    return True


async def journal_of(session: AsyncSession, command_id: int) -> list[CommandJournalEntry]:
    return await store.journal_of(session, command_id)


async def command_log(
    session: AsyncSession, device_id: int, *, limit: int = 100, before_id: int | None = None
) -> list[tuple[Command, list[CommandJournalEntry]]]:
    return await store.command_log(session, device_id, limit=limit, before_id=before_id)
