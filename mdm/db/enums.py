"""The plain enums of the platform-neutral tables, importable without the ORM (handlers and API
schemas use them; ``mdm.db.models`` builds its CHECK constraints from them)."""

from __future__ import annotations

import enum


class Protocol(enum.IntEnum):
    """The reference product's protocol bitmask."""

    IOS = 1
    KES = 2
    EAS = 4


class DeviceStatus(enum.StrEnum):
    OK = "ok"
    WIPED = "wiped"
    REMOVING = "removing"
    REMOVE_FAILED = "remove_failed"
    UNMANAGED = "unmanaged"


class CommandStatus(enum.StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    REMOVING = "removing"
    REMOVED = "removed"
    REMOVE_FAILED = "remove_failed"


ACTIVE_COMMAND_STATUSES = (CommandStatus.PROCESSING, CommandStatus.REMOVING)


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    FUNCTIONAL_FAILURE = "functional_failure"
    CRITICAL = "critical"
