"""Command results in a sync: checked all first, then applied, in the sync's transaction.

A result is accepted only for a command of this device that is in flight (delivered, no result
yet). A result for an unknown command, another device's, or one never delivered is refused
(409 ``unknown_command``) and, since the caller's transaction rolls back, nothing of the sync is
applied. A result repeated identically after it was recorded (a repeated sync under a new request
id) is ignored; one that differs is refused (409 ``result_conflict``), as are two different
results for one command in one sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, events
from mdm.core.commands import FINAL_STATUSES
from mdm.db.models import Command, CommandStatus
from mdm.kes import inventory, store_sync
from mdm.kes.event_types_sync import KES_DEVICE_REMOVED, KES_DEVICE_WIPED, KES_LOCATION_UPDATED
from mdm.kes.sync_errors import InvalidResult, ResultConflict, UnknownCommand

COMPLETED = "completed"


def _number(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    return isinstance(value, int | float) and not isinstance(value, bool)


def stored_data(command_type: str, data: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the command's ``result_data`` keeps: a RefreshDeviceInfo's inventory goes to the
    device, the command keeps the names of the parts."""
    if command_type == "RefreshDeviceInfo" and data is not None and isinstance(data.get("inventory"), dict):
        rest = {k: v for k, v in data.items() if k != "inventory"}
        return {**rest, "parts": sorted(data["inventory"])}
    return data


def _check_data(command: Command, success: bool, data: dict[str, Any] | None) -> None:
    if not success:
        return
    if command.type == "Locate":
        if data is None or not (_number(data, "latitude") and _number(data, "longitude")):
            raise InvalidResult(f"the Locate result {command.guid} has no latitude and longitude",
                                command=command.guid)
        if not (-90 <= data["latitude"] <= 90 and -180 <= data["longitude"] <= 180):
            raise InvalidResult(f"the Locate result {command.guid} is not a position on Earth",
                                command=command.guid)
    if command.type == "RefreshDeviceInfo" and data is not None and "inventory" in data:
        if not isinstance(data["inventory"], dict):
            raise InvalidResult(f"the RefreshDeviceInfo result {command.guid}: inventory is not an object",
                                command=command.guid)
    if command.type == "Mugshot":
        raise ResultConflict(
            f"a Mugshot completes with its picture (POST /kes/v1/mugshot?command_id={command.guid})",
            command=command.guid,
        )


def _same(command: Command, result: Mapping[str, Any]) -> bool:
    """The recorded answer is this result (a duplicate)."""
    success = result["status"] == COMPLETED
    expected = CommandStatus.COMPLETED if success else CommandStatus.FAILED
    if command.type == "Mugshot" and success:
        return command.status == CommandStatus.COMPLETED  # the picture completed it
    return (
        command.status == expected
        and (command.result_info or None) == (result.get("error") or None)
        and command.result_data == stored_data(command.type, result.get("data"))
    )


def unique(results: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The results by command GUID; the same result twice counts once, two different ones are
    refused."""
    by_guid: dict[str, Mapping[str, Any]] = {}
    for result in results:
        guid = str(result["command_id"]).upper()
        known = by_guid.get(guid)
        if known is not None and dict(known) != dict(result):
            raise ResultConflict(f"two different results for command {guid} in one sync", command=guid)
        by_guid[guid] = result
    return by_guid


async def check(
    session: AsyncSession, device_id: int, results: Mapping[str, Mapping[str, Any]]
) -> list[tuple[Command, Mapping[str, Any]]]:
    """The commands to complete (row-locked), duplicates left out; raises for any bad result."""
    due: list[tuple[Command, Mapping[str, Any]]] = []
    for guid, result in results.items():
        command = await commands.lock_by_guid(session, guid)
        if command is None or command.device_id != device_id:
            raise UnknownCommand(f"no command {guid} for this device", command=guid)
        if command.status in FINAL_STATUSES:
            if _same(command, result):
                continue
            raise ResultConflict(
                f"command {guid} already has a different result ({command.status})", command=guid
            )
        row = await store_sync.queue_row(session, command.id)
        if row is None or not row["in_flight"]:
            raise UnknownCommand(f"command {guid} was not delivered to this device", command=guid)
        _check_data(command, result["status"] == COMPLETED, result.get("data"))
        due.append((command, result))
    return due


async def apply(
    session: AsyncSession,
    device_id: int,
    due: Sequence[tuple[Command, Mapping[str, Any]]],
    now: datetime,
    update: inventory.DeviceUpdate,
    current: Mapping[str, Any],
) -> None:
    """Complete each command (journal and command events from ``core.commands``) and gather what
    its result changes on the device into ``update`` (written once by the caller)."""
    for command, result in due:
        success = result["status"] == COMPLETED
        data = result.get("data")
        recorded = await commands.complete(
            session, command, success=success, info=result.get("error") or None,
            data=stored_data(command.type, data), take=True,
        )
        if not recorded:
            raise UnknownCommand(f"command {command.guid} is not awaiting a result", command=command.guid)
        if not success:
            continue
        if command.type == "Locate" and data is not None:
            update.parts[inventory.LOCATION_PART] = inventory.location_entry(data, now)
            events.emit(session, KES_LOCATION_UPDATED, device_id=device_id, command=command.guid,
                        latitude=float(data["latitude"]), longitude=float(data["longitude"]),
                        accuracy_m=data.get("accuracy_m"),
                        at=str(data.get("at") or now.isoformat()))
        elif command.type == "RefreshDeviceInfo" and isinstance((data or {}).get("inventory"), dict):
            assert data is not None
            inventory.apply_parts(current, data["inventory"], now, update)
        elif command.type == "Wipe":
            await store_sync.mark_wiped(session, device_id)
            events.emit(session, KES_DEVICE_WIPED, device_id=device_id, command=command.guid)
        elif command.type == "Remove":
            await store_sync.end_binding(session, device_id, now)
            others = await store_sync.active_commands(session, device_id)
            for other in others:
                await commands.complete(session, other, success=False, info="the device was removed")
            events.emit(session, KES_DEVICE_REMOVED, device_id=device_id, command=command.guid,
                        commands_failed=len(others))
