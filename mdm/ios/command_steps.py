"""Step bookkeeping of multi-step commands.

A stored payload is one Apple command (``RequestType`` at the top level) or several
(RefreshDeviceInfo, SoftWipe, Locate/Alarm with ``enable_lost_mode``): ``{"Steps": [command,
...]}``, delivered one at a time (see ``core.commands.step_done``). ``CommandUUID`` is the
command's GUID for a one-step command and ``GUID.N`` for step N.

Delivery (for the command channel)::

    uuid, body = outgoing(command, unlock_token=ios_device.unlock_token)   # the step due now
    plist = {"CommandUUID": uuid, "Command": body}
    ...
    guid, _ = split_command_uuid(report["CommandUUID"])                  # find the command
    step = answered_step(command, report["CommandUUID"])                 # None: stale/replayed
    request_type, last = step
    await (core.commands.complete if last else core.commands.step_done)(session, command, ...)
"""

from __future__ import annotations

import plistlib
import re
from collections.abc import Mapping
from typing import Any

from cachetools import LRUCache

from mdm.core.commands import step_index
from mdm.db.models import Command
from mdm.ios.command_codec import to_plist_dict

STEPS = "Steps"
# Commands whose plist is cached between devices (see ``message``): queries that carry no secret
# and are sent alike to a whole fleet (a RefreshDeviceInfo's 30-odd DeviceInformation queries).
CACHED_REQUEST_TYPES = frozenset({
    "DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList", "InstalledApplicationList",
    "ManagedApplicationList", "ProvisioningProfileList", "RestrictionsList", "AvailableOSUpdates",
    "OSUpdateStatus",
})
_MAX_CACHED_KEY = 4096
_PLACEHOLDER = "MDM-COMMAND-UUID-PLACEHOLDER"
_PLAIN_UUID = re.compile(r"[0-9A-Za-z.-]{1,64}")
# repr of the stored step -> the plist before and after its CommandUUID.
_ENCODED: LRUCache[str, tuple[bytes, bytes]] = LRUCache(maxsize=256)


def steps_of(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Apple commands of a stored payload, in delivery order (one for most commands)."""
    steps = payload.get(STEPS)
    if "RequestType" not in payload and isinstance(steps, list):
        return [dict(s) for s in steps]
    return [dict(payload)]


def stored(steps: list[Any]) -> dict[str, Any]:
    """The payload to store for these (JSON-safe) steps."""
    return steps[0] if len(steps) == 1 else {STEPS: steps}


def command_uuid(guid: str, step: int, total: int) -> str:
    """CommandUUID of a step: the command's GUID, suffixed ``.N`` when it has several steps."""
    return guid if total <= 1 else f"{guid}.{step}"


def split_command_uuid(value: str) -> tuple[str, int]:
    """``guid`` or ``guid.N`` -> (guid, step)."""
    guid, sep, tail = value.rpartition(".")
    if sep and tail.isdigit() and len(tail) <= 4:
        return guid, int(tail)
    return value, 0


def current_step(command: Command) -> dict[str, Any]:
    """The stored Apple command of the step due now (the last one once all are answered)."""
    steps = steps_of(command.payload or {})
    return steps[min(step_index(command), len(steps) - 1)]


def outgoing(command: Command, *, unlock_token: bytes | None = None) -> tuple[str, dict[str, Any]]:
    """(CommandUUID, ``Command`` dict) of the step of ``command`` to deliver now."""
    steps = steps_of(command.payload or {})
    index = min(step_index(command), len(steps) - 1)
    body = to_plist_dict(steps[index], unlock_token=unlock_token)
    return command_uuid(command.guid, index, len(steps)), body


def answered_step(command: Command, reported_uuid: str) -> tuple[str, bool] | None:
    """For a device's report: (RequestType of the step it answers, whether it is the last step),
    or None when ``reported_uuid`` is not the step in flight (a stale or replayed report)."""
    steps = steps_of(command.payload or {})
    index = step_index(command)
    if index >= len(steps) or reported_uuid != command_uuid(command.guid, index, len(steps)):
        return None
    return str(steps[index].get("RequestType", "")), index == len(steps) - 1


def message(command: Command, *, unlock_token: bytes | None = None) -> bytes:
    """The XML plist ``{"CommandUUID": ..., "Command": ...}`` of the step of ``command`` to
    deliver now. Secret-free queries (``CACHED_REQUEST_TYPES``) and bare requests are encoded
    once per distinct step and reused with the command's UUID (plistlib's writer is pure Python:
    a 30-query DeviceInformation took a tenth of a round trip). Raises what ``to_plist_dict`` and
    plistlib raise for a payload that cannot be sent."""
    steps = steps_of(command.payload or {})
    index = min(step_index(command), len(steps) - 1)
    step = steps[index]
    uuid = command_uuid(command.guid, index, len(steps))
    # A bare request (``{"RequestType": "DeviceLock"}``: a Block without message, number or PIN,
    # a restart) carries nothing but its type; with an UnlockToken it is the device's own.
    bare = unlock_token is None and step.keys() == {"RequestType"}
    key = repr(step) if bare or step.get("RequestType") in CACHED_REQUEST_TYPES else ""
    if not key or len(key) > _MAX_CACHED_KEY or not _PLAIN_UUID.fullmatch(uuid):
        body = to_plist_dict(step, unlock_token=unlock_token)
        return plistlib.dumps({"CommandUUID": uuid, "Command": body}, fmt=plistlib.FMT_XML)
    parts = _ENCODED.get(key)
    if parts is None:
        body = to_plist_dict(step, unlock_token=unlock_token)
        encoded = plistlib.dumps({"CommandUUID": _PLACEHOLDER, "Command": body}, fmt=plistlib.FMT_XML)
        before, _, after = encoded.partition(_PLACEHOLDER.encode())  # plain text: found once
        parts = _ENCODED[key] = (before, after)
    return parts[0] + uuid.encode() + parts[1]
