"""The event types of the platform-neutral core: devices, groups, commands and the aggregate of
rejected requests (``mdm.core.security_events``). Each is declared once; ``events.emit`` takes
these values."""

from __future__ import annotations

from typing import Any

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class DeviceDeleted(EventBody):
    identifier: str
    protocol: str
    by: str | None = None


class GroupMoved(EventBody):
    group: int
    name: str
    from_parent: int | None = None
    to_parent: int | None = None
    by: str | None = None


class CommandCreated(EventBody):
    command: str
    command_type: str
    created_by: str | None = None


class CommandRecalled(EventBody):
    command: str
    command_type: str
    status: str


class CommandFinished(EventBody):
    command: str
    command_type: str
    status: str
    info: str | None = None


class BulkCommandCreated(EventBody):
    bulk: int
    command_type: str
    target: str
    group: int | None = None
    targeted: int
    created_by: str | None = None


class CommandsCreated(EventBody):
    bulk: int
    command_type: str
    count: int
    # [device id, command GUID] of every command of the batch
    commands: list[tuple[int, str]]


class BulkCommandQueued(EventBody):
    bulk: int
    command_type: str
    targeted: int
    queued: int
    skipped: int
    skipped_reasons: dict[str, int]


class BulkCommandRecalled(EventBody):
    bulk: int
    command_type: str
    count: int
    # [device id, command GUID] of every command this batch of the recall removed
    commands: list[tuple[int, str]]
    by: str | None = None


class SecurityRejectionsAggregated(EventBody):
    event: str
    source: str
    reason: str
    count: int
    first_seen: str | None = None
    last_seen: str | None = None
    interval_seconds: int | float
    sample: dict[str, Any] | None = None


DEVICE_DELETED = EventType(
    "device_deleted", Severity.WARNING, DeviceDeleted,
    "A device record was deleted (its commands with it); its certificate stops identifying it",
)
GROUP_MOVED = EventType(
    "group_moved", Severity.INFO, GroupMoved, "An administration group moved under another parent"
)
COMMAND_CREATED = EventType(
    "command_created", Severity.INFO, CommandCreated, "A command was queued for a device"
)
COMMAND_RECALLED = EventType(
    "command_recalled", Severity.INFO, CommandRecalled,
    "A command was recalled (removed at once, or removing while the device holds it)",
)
COMMAND_COMPLETED = EventType(
    "command_completed", Severity.INFO, CommandFinished, "The device carried out a command"
)
COMMAND_FAILED = EventType(
    "command_failed", Severity.WARNING, CommandFinished,
    "A command failed on the device, or ended remove_failed after a late recall",
)
BULK_COMMAND_CREATED = EventType(
    "bulk_command_created", Severity.INFO, BulkCommandCreated,
    "An administrator sent a command to many devices (all, a group and its subgroups, or a list): "
    "the bulk operation is recorded and its devices are queued in batches",
)
COMMANDS_CREATED = EventType(
    "commands_created", Severity.INFO, CommandsCreated,
    "One batch of a bulk operation was queued: the bulk id, the command type, the count and the "
    "(device, command GUID) pairs. For bulk operations this one summary per batch REPLACES the "
    "per-device command_created event",
)
BULK_COMMAND_QUEUED = EventType(
    "bulk_command_queued", Severity.INFO, BulkCommandQueued,
    "A bulk operation finished queuing: targeted, queued and skipped counts (skipped per reason)",
)
BULK_COMMAND_RECALLED = EventType(
    "bulk_command_recalled", Severity.INFO, BulkCommandRecalled,
    "One batch of a bulk recall removed these not yet delivered commands of the operation (the "
    "(device, command GUID) pairs). For bulk recalls this summary REPLACES the per-device "
    "command_recalled event; commands the devices already hold are left to finish",
)
SECURITY_REJECTIONS_AGGREGATED = EventType(
    "security_rejections_aggregated", Severity.WARNING, SecurityRejectionsAggregated,
    "Rejected requests of one kind from one source counted over an interval instead of written "
    "one by one (count, first and last time seen, a sample)",
)
