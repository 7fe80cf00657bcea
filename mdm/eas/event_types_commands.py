"""Events of EAS commands (run by the service against Exchange) and of ActiveSync mailbox policy
management. The command itself reports its life cycle with the core command events
(command_created/delivered/completed/failed); these say what changed in Exchange and why a
command waits or failed."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.models import Severity


class WipeRequested(EventBody):
    identifier: str  # the EAS DeviceId
    command: str
    partnerships: list[str]  # Exchange identities the wipe was requested on
    requested_at: str


class WipeAcknowledged(EventBody):
    identifier: str
    partnership: str
    acknowledged_at: str


class DeviceRemoved(EventBody):
    identifier: str
    command: str
    partnerships: list[str]
    commands_failed: int


class MailboxChanged(EventBody):
    identifier: str
    command: str
    mailbox: str
    activesync_enabled: bool | None = None
    policy: str | None = None


_IPHONE = "corp.example.com/Users/alice/ExchangeActiveSyncDevices/iPhone§ApplF4KX31N2"


class TargetVanished(EventBody):
    identifier: str
    command: str
    kind: str  # "partnership" or "mailbox"
    exchange_identity: str
    message: str


class CommandDeferred(EventBody):
    identifier: str
    command: str
    command_type: str
    reason: str  # the ExchangeError reason: unavailable, timeout, bad_response, auth_failed...
    message: str
    retry_at: str


class CommandRefused(EventBody):
    identifier: str
    command: str
    command_type: str
    cmdlet: str
    reason: str  # not_permitted, cmdlet_error
    message: str


class PolicyChanged(EventBody):
    name: str
    by: str | None = None
    settings: dict[str, object] | None = None


class PolicyChangeFailed(EventBody):
    name: str
    operation: str  # "create", "edit" or "delete"
    cmdlet: str  # the cmdlet that failed, by its 2010 name
    reason: str  # why: cmdlet_error, not_found, not_permitted, unavailable, timeout, auth_failed...
    message: str
    by: str | None = None


EAS_WIPE_REQUESTED = EventType(
    "eas_wipe_requested", Severity.WARNING, WipeRequested,
    "Exchange accepted a remote wipe of an ActiveSync device: it sends the wipe at the device's next "
    "sync and keeps wiping it at every sync until the device is removed",
    example={"identifier": "ApplF4KX31N2", "command": "0C2B1B0E-3F0A-4C55-9E1A-3D6B5C1A2B3C",
             "partnerships": ["corp.example.com/Users/alice/ExchangeActiveSyncDevices/iPhone§ApplF4KX31N2"],
             "requested_at": "2026-12-03T15:00:00+00:00"},
)
EAS_WIPE_ACKNOWLEDGED = EventType(
    "eas_wipe_acknowledged", Severity.WARNING, WipeAcknowledged,
    "An ActiveSync device acknowledged its remote wipe (DeviceWipeAckTime); Exchange wipes it again "
    "if it syncs before it is removed",
    example={"identifier": "ApplF4KX31N2",
             "partnership": "corp.example.com/Users/alice/ExchangeActiveSyncDevices/iPhone§ApplF4KX31N2",
             "acknowledged_at": "2026-12-03T15:05:00+00:00"},
)
EAS_DEVICE_REMOVED = EventType(
    "eas_device_removed", Severity.INFO, DeviceRemoved,
    "An ActiveSync device's partnerships were removed from Exchange by a Remove command; the device "
    "is no longer managed and its other pending commands failed",
    example={"identifier": "ApplF4KX31N2", "command": "0C2B1B0E-3F0A-4C55-9E1A-3D6B5C1A2B3C",
             "partnerships": ["corp.example.com/Users/alice/ExchangeActiveSyncDevices/iPhone§ApplF4KX31N2"],
             "commands_failed": 0},
)
EAS_MAILBOX_CHANGED = EventType(
    "eas_mailbox_changed", Severity.INFO, MailboxChanged,
    "A command changed a mailbox's ActiveSync settings (ActiveSync allowed or blocked, or the "
    "ActiveSync mailbox policy assigned)",
    example={"identifier": "ApplF4KX31N2", "command": "0C2B1B0E-3F0A-4C55-9E1A-3D6B5C1A2B3C",
             "mailbox": "corp.example.com/Users/alice", "activesync_enabled": False},
)
EAS_COMMAND_TARGET_VANISHED = EventType(
    "eas_command_target_vanished", Severity.WARNING, TargetVanished,
    "A command found that a partnership or mailbox no longer exists in Exchange (removed since "
    "discovery); it is marked vanished",
    example={"identifier": "ApplF4KX31N2", "command": "0C2B1B0E-3F0A-4C55-9E1A-3D6B5C1A2B3C",
             "kind": "partnership",
             "exchange_identity": _IPHONE,
             "message": "The ActiveSync device was not found."},
)
EAS_COMMAND_DEFERRED = EventType(
    "eas_command_deferred", Severity.WARNING, CommandDeferred,
    "An EAS command could not reach Exchange (unavailable, timeout, garbage answer, Kerberos "
    "failure); it stays queued and is retried at retry_at",
    example={"identifier": "ApplF4KX31N2", "command": "0C2B1B0E-3F0A-4C55-9E1A-3D6B5C1A2B3C",
             "command_type": "Wipe", "reason": "unavailable",
             "message": "connection refused (server cas1.corp.example.com)",
             "retry_at": "2026-12-03T15:01:00+00:00"},
)
EAS_COMMAND_REFUSED = EventType(
    "eas_command_refused", Severity.FUNCTIONAL_FAILURE, CommandRefused,
    "Exchange refused an EAS command: the service account may not run the cmdlet, or the cmdlet "
    "wrote an error record; the command failed with Exchange's message",
    example={"identifier": "ApplF4KX31N2", "command": "0C2B1B0E-3F0A-4C55-9E1A-3D6B5C1A2B3C",
             "command_type": "Wipe", "cmdlet": "Clear-ActiveSyncDevice", "reason": "not_permitted",
             "message": "The term 'Clear-ActiveSyncDevice' is not recognized as the name of a cmdlet"},
)
EAS_POLICY_CREATED = EventType(
    "eas_policy_created", Severity.INFO, PolicyChanged,
    "An administrator created an ActiveSync mailbox policy in Exchange",
    example={"name": "Sales phones", "by": "admin", "settings": {"password_required": True}},
)
EAS_POLICY_CHANGED = EventType(
    "eas_policy_changed", Severity.INFO, PolicyChanged,
    "An administrator changed an ActiveSync mailbox policy in Exchange (settings as Exchange shows "
    "them afterwards)",
    example={"name": "Sales phones", "by": "admin", "settings": {"min_password_length": 6}},
)
EAS_POLICY_DELETED = EventType(
    "eas_policy_deleted", Severity.INFO, PolicyChanged,
    "An administrator deleted an ActiveSync mailbox policy from Exchange",
    example={"name": "Sales phones", "by": "admin"},
)

EAS_POLICY_CHANGE_FAILED = EventType(
    "eas_policy_change_failed", Severity.WARNING, PolicyChangeFailed,
    "Exchange refused or could not run an administrator's change of an ActiveSync mailbox policy "
    "(the request was answered with the error); nothing was changed in the service",
    example={"name": "Sales phones", "operation": "create", "cmdlet": "New-ActiveSyncMailboxPolicy",
             "reason": "cmdlet_error", "message": "The object 'Sales phones' already exists.",
             "by": "admin"},
)
