"""The command channel's common round trip on PostgreSQL without transaction blocks
(``mdm.core.delivery_direct``): an Idle poll that hands out a command, a final answer that only
completes its command. Each is two statements on one autocommit connection, against four round
trips in a transaction (BEGIN and COMMIT around two statements). Anything else, and a command
that changed between the read and the write, returns None: ``mdm.ios.channel`` then runs its
transactional path, which nothing here has touched.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mdm.core import delivery_direct, in_flight
from mdm.core.identity import Binding
from mdm.db.models import Command
from mdm.ios import command_steps, inventory
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


def _reports_facts(report: CommandReport) -> bool:
    """An Acknowledged answer that carries what the device record is made of (an inventory
    answer): the transactional path at once, without a read that could only send it there."""
    if report.status != "Acknowledged":
        return False
    declared = report.result.get("RequestType")
    if isinstance(declared, str) and declared in DEVICE_CHANGING:
        return True
    return any(key in report.result for key in inventory.ANSWER_KEYS.values())


def answered_plainly(command: Command) -> bool:
    """Whether a final answer to the step of ``command`` due now may change only the command
    (not an inventory answer, an erase or a removal): worth keeping ``command`` from its delivery
    (``mdm.core.in_flight``) for the answer."""
    request_type = command_steps.current_step(command).get("RequestType")
    return command.type != "Remove" and request_type not in DEVICE_CHANGING


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
    if answered_plainly(command):
        command.attempts += 1  # as the row now is
        in_flight.remember(engine, command)
    return body


async def answer(engine: AsyncEngine, binding: Binding, report: CommandReport) -> bool | None:
    """Record the final answer to a command that changes nothing but the command: whether the
    device has another command queued; None: take the transactional path."""
    if report.command_uuid is None or report.status == "NotNow" or _reports_facts(report):
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
        if final is None:
            return None  # not this device's, replayed, a step that is not the last...
        success, info, data = final
        return await delivery_direct.complete(conn, command, success=success, info=info, data=data)
