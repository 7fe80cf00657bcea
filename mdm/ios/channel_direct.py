"""The command channel's common round trip on PostgreSQL without transaction blocks
(``mdm.core.delivery_direct``): an Idle poll that hands out a command, a final answer that
completes its command. Each is at most two statements on one autocommit connection (one for an
answer to a command this process delivered: ``mdm.core.in_flight``), against four round trips in
a transaction (BEGIN and COMMIT around two statements); an inventory answer, which also writes
the device, its facts and its event, is that one statement too, against seven in a transaction.
Anything else (a NotNow, a step that is not the last, an erase, a removal, facts that depend on
the device's row as stored), and a command that changed between its delivery or read and the
write, returns None: ``mdm.ios.channel`` then runs its transactional path, which nothing here
has touched.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mdm.core import delivery_direct, events, in_flight
from mdm.core.delivery_direct import FactsWrite
from mdm.core.identity import Binding
from mdm.db.models import Command
from mdm.ios import command_steps, inventory
from mdm.ios.event_types import INVENTORY_UPDATED
from mdm.ios.messages import CommandReport, describe_errors, to_json_safe

MDM_PROFILE_REMOVAL = "RemoveProfile"
# Acknowledged answers that change the device record (others only complete the command).
DEVICE_CHANGING = frozenset({*inventory.ANSWER_KEYS, "EraseDevice", MDM_PROFILE_REMOVAL})

supported = delivery_direct.autocommits


def outcome(report: CommandReport) -> tuple[bool, str, dict[str, Any] | None]:
    """(success, info, result data) of an Acknowledged, Error or CommandFormatError report."""
    data = to_json_safe(report.result)
    if report.status == "Acknowledged":
        return True, "Acknowledged", data
    if report.status == "CommandFormatError":
        return False, "CommandFormatError: the device could not parse the command", data
    return False, f"Error: {describe_errors(report)}", data


def changed_device(command: Command, report: CommandReport, step_type: str) -> str | None:
    """For an Acknowledged answer: the request type whose answer changes the device record
    (inventory, erase, removal), or None when it only completes the command."""
    request_type = inventory.request_type_of(report.result, step_type or None)
    if request_type is None or (request_type not in DEVICE_CHANGING and command.type != "Remove"):
        return None
    return request_type


def answered_plainly(command: Command) -> bool:
    """Whether a final answer to the step of ``command`` due now may change only the command
    (not an inventory answer, an erase or a removal): worth keeping ``command`` from its delivery
    (``mdm.core.in_flight``) for the answer."""
    request_type = command_steps.current_step(command).get("RequestType")
    return command.type != "Remove" and request_type not in DEVICE_CHANGING


def kept_for_answer(engine: AsyncEngine, command: Command) -> bool:
    """Whether to keep ``command`` from its delivery for the answer (``mdm.core.in_flight``):
    a plain one; on PostgreSQL also an inventory request, whose answer is one statement
    (``answer``) when the command is known."""
    if answered_plainly(command):
        return True
    request_type = command_steps.current_step(command).get("RequestType")
    return supported(engine) and command.type != "Remove" and request_type in inventory.PART_NAMES


def plain_final(
    command: Command, binding: Binding, report: CommandReport
) -> tuple[bool, str, dict[str, Any] | None] | None:
    """(success, info, result data) when ``report`` is the final answer of ``command``'s last step
    and changes nothing but the command; None otherwise (not this device's, replayed, a NotNow, a
    step that is not the last, an answer that changes the device)."""
    if report.command_uuid is None or report.status == "NotNow" or command.device_id != binding.device_id:
        return None
    step = command_steps.answered_step(command, report.command_uuid)
    if step is None or not step[1]:
        return None
    if report.status == "Acknowledged" and changed_device(command, report, step[0]) is not None:
        return None
    return outcome(report)


def describing_final(
    command: Command, binding: Binding, report: CommandReport
) -> tuple[tuple[bool, str, dict[str, Any] | None], inventory.BlindUpdate] | None:
    """For the final acknowledged answer of an inventory step of ``command``: its outcome and
    what it writes to the device whatever the device's row holds; None otherwise (not this
    device's, replayed, not the last step, not inventory, facts that depend on the row)."""
    if report.status != "Acknowledged" or report.command_uuid is None:
        return None
    if command.device_id != binding.device_id:
        return None
    step = command_steps.answered_step(command, report.command_uuid)
    if step is None or not step[1] or command.type == "Remove":
        return None
    request_type = changed_device(command, report, step[0])
    if request_type is None or request_type not in inventory.PART_NAMES:
        return None
    update = inventory.blind_update(request_type, report.result)
    return None if update is None else (outcome(report), update)


def plain_message(command: Command) -> bytes | None:
    """The plist of the step due now when nothing else is needed to build it (a stored
    translation, no UnlockToken to add, encodable); None otherwise."""
    if not command.payload:
        return None  # translated at delivery
    current = command_steps.current_step(command)
    request_type = current.get("RequestType")
    if not isinstance(request_type, str) or request_type == "ClearPasscode":
        return None
    try:
        return command_steps.message(command)
    except (TypeError, ValueError, OverflowError):
        return None  # failed by the transactional path, which says why


async def deliver(engine: AsyncEngine, device_id: int, *, ready_only: bool) -> bytes | None:
    """The message of the device's next command, now in flight; b"" when nothing is queued;
    None: take the transactional path."""
    async with delivery_direct.autocommit(engine) as conn:
        command = await delivery_direct.next_command(conn, device_id, ready_only=ready_only)
        if command is None:
            return b""
        body = plain_message(command)
        if body is None or not await delivery_direct.delivered(conn, command):
            return None
    if kept_for_answer(engine, command):
        command.attempts += 1  # as the row now is
        in_flight.remember(engine, command)
    return body


async def answer(engine: AsyncEngine, binding: Binding, report: CommandReport) -> bool | None:
    """Record the final answer to a command that changes nothing but the command, or an
    inventory answer with its facts: whether the device has another command queued; None: take
    the transactional path."""
    if report.command_uuid is None or report.status == "NotNow":
        return None
    guid, _ = command_steps.split_command_uuid(report.command_uuid)
    # As this process delivered it (no read): the write checks that it is still so.
    command = in_flight.take(engine, guid)
    async with delivery_direct.autocommit(engine) as conn:
        if command is None:
            command = await delivery_direct.command_by_guid(conn, guid)
            if command is None:
                return None
        final = plain_final(command, binding, report)
        if final is not None:
            success, info, data = final
            return await delivery_direct.complete(conn, command, success=success, info=info, data=data)
        described = describing_final(command, binding, report)
        if described is None:
            return None  # not this device's, replayed, a step that is not the last, an erase...
        (success, info, data), update = described
        event = events.event_values(
            INVENTORY_UPDATED, device_id=binding.device_id, part=update.part, count=update.count
        )
        facts = FactsWrite(update.part, update.entry, update.columns, update.attributes, event)
        return await delivery_direct.complete_describing(
            conn, command, success=success, info=info, data=data, facts=facts
        )
