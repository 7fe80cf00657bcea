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
SECURITY_REJECTIONS_AGGREGATED = EventType(
    "security_rejections_aggregated", Severity.WARNING, SecurityRejectionsAggregated,
    "Rejected requests of one kind from one source counted over an interval instead of written "
    "one by one (count, first and last time seen, a sample)",
)
