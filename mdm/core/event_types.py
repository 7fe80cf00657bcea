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


class DeviceStatusChanged(EventBody):
    # ok, wiped, removing, remove_failed or unmanaged
    status: str
    previous: str
    # Why: enrolled, registered, wipe_confirmed, remove_confirmed, checked_out, unenrolled
    reason: str


class DevicesSeen(EventBody):
    # ios or kes
    protocol: str
    # Distinct devices of the protocol that checked in (iOS) or synced (KES) in the interval
    devices: int
    since: str
    until: str


class GroupMoved(EventBody):
    group: int
    name: str  # the group's name
    from_parent: int | None = None
    to_parent: int | None = None
    by: str | None = None


class CommandCreated(EventBody):
    command: str
    command_type: str
    created_by: str | None = None


class CommandDelivered(EventBody):
    command: str
    command_type: str


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


class BulkOperationProgress(EventBody):
    bulk: int
    command_type: str
    # The step crossed: 25, 50 or 75 (percent of the devices targeted that were processed)
    percent: int
    # Devices processed so far (queued + skipped)
    processed: int
    targeted: int
    queued: int
    skipped: int


class BulkCommandRecalled(EventBody):
    bulk: int
    command_type: str
    count: int
    # [device id, command GUID] of every command this batch of the recall removed
    commands: list[tuple[int, str]]
    by: str | None = None


class SecurityRejectionsAggregated(EventBody):
    event: str  # the type of the events counted (security_identity_rejected, ...)
    source: str  # where they came from: the IPv4 address or the IPv6 /64
    reason: str
    count: int
    first_seen: str | None = None
    last_seen: str | None = None
    interval_seconds: int | float
    sample: dict[str, Any] | None = None


DEVICE_DELETED = EventType(
    "device_deleted", Severity.WARNING, DeviceDeleted,
    "A device record was deleted (its commands with it); its certificate stops identifying it",
    example={"identifier": "00008030-001A2B3C4D5E802E", "protocol": "ios", "by": "ops"},
)
DEVICE_STATUS_CHANGED = EventType(
    "device_status_changed", Severity.INFO, DeviceStatusChanged,
    "A device's status changed (iOS and KES alike), beside the protocol's own event that says what "
    "happened (device_wiped, device_unenrolled for an iOS CheckOut, kes_device_removed, ...)",
    example={"status": "unmanaged", "previous": "ok", "reason": "checked_out"},
)
DEVICES_SEEN = EventType(
    "devices_seen", Severity.INFO, DevicesSeen,
    "The last-seen summary, once an hour per protocol: how many distinct devices were seen since the "
    "previous summary (no event per check-in; none for an hour without any). Each device's own "
    "last-seen time is in its record",
    example={"protocol": "ios", "devices": 48210, "since": "2026-12-03T11:00:00+00:00",
             "until": "2026-12-03T12:00:00+00:00"},
)
GROUP_MOVED = EventType(
    "group_moved", Severity.INFO, GroupMoved, "An administration group moved under another parent",
    example={"group": 12, "name": "Sales", "from_parent": 1, "to_parent": 7, "by": "ops"},
)
COMMAND_CREATED = EventType(
    "command_created", Severity.INFO, CommandCreated, "A command was queued for a device",
    example={
        "command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9",
        "command_type": "DeviceLock",
        "created_by": "ops",
    },
)
COMMAND_DELIVERED = EventType(
    "command_delivered", Severity.INFO, CommandDelivered,
    "The device fetched a command (iOS: in the answer to a check-in poll; KES: in a sync answer); "
    "written at its first delivery only, not again when a NotNow'd command is offered anew",
    example={"command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9", "command_type": "DeviceLock"},
)
COMMAND_RECALLED = EventType(
    "command_recalled", Severity.INFO, CommandRecalled,
    "A command was recalled (removed at once, or removing while the device holds it)",
    example={
        "command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9",
        "command_type": "DeviceLock",
        "status": "removed",
    },
)
COMMAND_COMPLETED = EventType(
    "command_completed", Severity.INFO, CommandFinished, "The device carried out a command",
    example={
        "command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9",
        "command_type": "DeviceInformation",
        "status": "completed",
    },
)
COMMAND_FAILED = EventType(
    "command_failed", Severity.WARNING, CommandFinished,
    "A command failed on the device, or ended remove_failed after a late recall",
    example={
        "command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9",
        "command_type": "InstallProfile",
        "status": "failed",
        "info": "MCProfileErrorDomain 4001: profile refused",
    },
)
BULK_COMMAND_CREATED = EventType(
    "bulk_command_created", Severity.INFO, BulkCommandCreated,
    "An administrator sent a command to many devices (all, a group and its subgroups, or a list): "
    "the bulk operation is recorded and its devices are queued in batches",
    example={
        "bulk": 42,
        "command_type": "DeviceInformation",
        "target": "group",
        "group": 7,
        "targeted": 25000,
        "created_by": "ops",
    },
)
COMMANDS_CREATED = EventType(
    "commands_created", Severity.INFO, CommandsCreated,
    "One batch of a bulk operation was queued: the bulk id, the command type, the count and the "
    "(device, command GUID) pairs. For bulk operations this one summary per batch REPLACES the "
    "per-device command_created event",
    example={
        "bulk": 42,
        "command_type": "DeviceInformation",
        "count": 2,
        "commands": [
            [101, "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"], [102, "0A1B2C3D-4E5F-4061-8293-A4B5C6D7E8F9"]
        ],
    },
)
BULK_COMMAND_QUEUED = EventType(
    "bulk_command_queued", Severity.INFO, BulkCommandQueued,
    "A bulk operation finished queuing: targeted, queued and skipped counts (skipped per reason)",
    example={
        "bulk": 42,
        "command_type": "DeviceInformation",
        "targeted": 25000,
        "queued": 24990,
        "skipped": 10,
        "skipped_reasons": {"unmanaged": 10},
    },
)
BULK_OPERATION_PROGRESS = EventType(
    "bulk_operation_progress", Severity.INFO, BulkOperationProgress,
    "A bulk operation being queued passed 25, 50 or 75% of its targeted devices (at most three per "
    "operation, whatever its size; 100% is bulk_command_queued)",
    example={
        "bulk": 42, "command_type": "DeviceInformation", "percent": 50, "processed": 12600,
        "targeted": 25000, "queued": 12595, "skipped": 5,
    },
)
BULK_COMMAND_RECALLED = EventType(
    "bulk_command_recalled", Severity.INFO, BulkCommandRecalled,
    "One batch of a bulk recall removed these not yet delivered commands of the operation (the "
    "(device, command GUID) pairs). For bulk recalls this summary REPLACES the per-device "
    "command_recalled event; commands the devices already hold are left to finish",
    example={
        "bulk": 42,
        "command_type": "DeviceInformation",
        "count": 1,
        "commands": [[101, "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"]],
        "by": "ops",
    },
)
SECURITY_REJECTIONS_AGGREGATED = EventType(
    "security_rejections_aggregated", Severity.WARNING, SecurityRejectionsAggregated,
    "Rejected requests of one kind from one source counted over an interval instead of written "
    "one by one (count, first and last time seen, a sample)",
    example={
        "event": "security_identity_rejected",
        "source": "203.0.113.7",
        "reason": "unknown_certificate",
        "count": 312,
        "first_seen": "2026-12-03T10:00:02+00:00",
        "last_seen": "2026-12-03T10:00:59+00:00",
        "interval_seconds": 60,
        "sample": {"path": "/mdm/server"},
    },
)
