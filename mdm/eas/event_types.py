"""Events of EAS discovery: what changed in Exchange between two runs (devices, mailboxes,
ActiveSync mailbox policies) and each run's outcome. Emitted in the transaction that writes the
change. Last sync times are not changes (they move at every sync)."""

from __future__ import annotations

from typing import Any

from mdm.core.events import EventBody, EventType
from mdm.db.models import Severity


class DeviceDiscovered(EventBody):
    identifier: str  # the EAS DeviceId
    mailbox: str  # Exchange identity of the mailbox of this partnership
    partnership: str  # Exchange identity of the partnership
    model: str | None = None
    os: str | None = None
    owner: str | None = None


class DeviceChanged(EventBody):
    identifier: str
    partnership: str
    # field -> [old, new]: model, os, policy_applied, access_state, wipe_state, owner
    changes: dict[str, list[Any]]


class DeviceVanished(EventBody):
    identifier: str
    partnership: str
    mailbox: str
    last_sync: str | None = None


class DeviceReappeared(EventBody):
    identifier: str
    partnership: str
    vanished_at: str


class MailboxChanged(EventBody):
    mailbox: str
    changes: dict[str, list[Any]]  # activesync_enabled, policy: [old, new]


class MailboxVanished(EventBody):
    mailbox: str
    owner: str | None = None


class PolicyEvent(EventBody):
    policy: str  # its name
    is_default: bool = False
    changes: dict[str, list[Any]] | None = None  # eas_policy_changed: setting -> [old, new]


class DiscoveryCompleted(EventBody):
    outcome: str  # "ok" | "partial"
    mailboxes: int
    devices: int
    policies: int
    vanished: int
    failed_mailboxes: int
    duration_seconds: float


class DiscoveryFailed(EventBody):
    reason: str  # ExchangeError.reason: "unavailable", "auth", "timeout", "protocol", ...
    message: str
    duration_seconds: float


_DEV = {
    "identifier": "ApplF2LXK1ABC123",
    "partnership": "corp.example.com/Users/alice/ExchangeActiveSyncDevices/iPhone§ApplF2LXK1ABC123",
}
EAS_DEVICE_DISCOVERED = EventType(
    "eas_device_discovered",
    Severity.INFO,
    DeviceDiscovered,
    "Discovery found an ActiveSync partnership it did not know: a phone syncing a mailbox (a new "
    "device in the common list, or a known phone's further mailbox)",
    example={
        **_DEV,
        "mailbox": "corp.example.com/Users/alice",
        "model": "iPhone15,2",
        "os": "iOS 17.1 21B74",
        "owner": "alice@corp.example.com",
    },
)
EAS_DEVICE_CHANGED = EventType(
    "eas_device_changed",
    Severity.INFO,
    DeviceChanged,
    "A partnership's model, OS, applied policy, access state, wipe state or owner changed since "
    "the last discovery",
    example={**_DEV, "changes": {"wipe_state": ["pending", "acknowledged"]}},
)
EAS_DEVICE_VANISHED = EventType(
    "eas_device_vanished",
    Severity.WARNING,
    DeviceVanished,
    "A complete discovery no longer found this partnership in Exchange (removed outside this "
    "service, or its mailbox is gone); the device stays in the list, marked vanished",
    example={**_DEV, "mailbox": "corp.example.com/Users/alice", "last_sync": "2026-12-01T08:00:00+00:00"},
)
EAS_DEVICE_REAPPEARED = EventType(
    "eas_device_reappeared",
    Severity.INFO,
    DeviceReappeared,
    "A partnership marked vanished is listed by Exchange again",
    example={**_DEV, "vanished_at": "2026-12-02T10:00:00+00:00"},
)
EAS_MAILBOX_UPDATED = EventType(
    "eas_mailbox_updated",
    Severity.INFO,
    MailboxChanged,
    "Discovery saw a mailbox's ActiveSync switch or mailbox policy changed since the last run "
    "(by anyone; eas_mailbox_changed is the same change made by a command of this service)",
    example={"mailbox": "corp.example.com/Users/alice", "changes": {"activesync_enabled": [True, False]}},
)
EAS_MAILBOX_VANISHED = EventType(
    "eas_mailbox_vanished",
    Severity.WARNING,
    MailboxVanished,
    "A complete discovery no longer found this mailbox",
    example={"mailbox": "corp.example.com/Users/bob", "owner": "bob@corp.example.com"},
)
EAS_POLICY_DISCOVERED = EventType(
    "eas_policy_discovered",
    Severity.INFO,
    PolicyEvent,
    "Discovery found an ActiveSync mailbox policy it did not know",
    example={"policy": "Executives", "is_default": False},
)
EAS_POLICY_UPDATED = EventType(
    "eas_policy_updated",
    Severity.INFO,
    PolicyEvent,
    "Discovery saw an ActiveSync mailbox policy's settings (or default flag) differ from the last run "
    "(eas_policy_changed: changed by this service)",
    example={"policy": "Default", "is_default": True, "changes": {"min_password_length": [4, 6]}},
)
EAS_POLICY_VANISHED = EventType(
    "eas_policy_vanished",
    Severity.WARNING,
    PolicyEvent,
    "A complete discovery no longer found this ActiveSync mailbox policy",
    example={"policy": "Contractors", "is_default": False},
)
EAS_DISCOVERY_COMPLETED = EventType(
    "eas_discovery_completed",
    Severity.INFO,
    DiscoveryCompleted,
    'A discovery run finished; "partial": some mailboxes\' devices could not be read (nothing was '
    "marked vanished in that run)",
    example={
        "outcome": "ok",
        "mailboxes": 5000,
        "devices": 9800,
        "policies": 4,
        "vanished": 2,
        "failed_mailboxes": 0,
        "duration_seconds": 41.2,
    },
)
EAS_DISCOVERY_FAILED = EventType(
    "eas_discovery_failed",
    Severity.FUNCTIONAL_FAILURE,
    DiscoveryFailed,
    "A discovery run stopped: Exchange was unreachable, refused the credentials, timed out or "
    "answered garbage. Nothing was marked vanished; the next interval retries",
    example={
        "reason": "unavailable",
        "message": "cas01.corp.example.com: connection refused",
        "duration_seconds": 15.3,
    },
)
