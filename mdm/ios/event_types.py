"""Events of the iOS listener: enrollment, push tokens, bootstrap tokens, inventory, the device's
answers that change its state, and refused requests."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.models import Severity


class DeviceEnrolled(EventBody):
    identifier: str
    serial_number: str | None = None
    model: str | None = None
    os_version: str | None = None
    cert_serial: str
    identity_source: str


class PushTokenUpdated(EventBody):
    channel: str  # "device" or "user"
    user_id_apple: str | None = None  # the user channel's Apple user id
    changed: bool | None = None  # device channel: the token or PushMagic changed
    unlock_token: bool | None = None  # device channel: an UnlockToken came with it


class DeviceUnenrolled(EventBody):
    identifier: str
    commands_failed: int


class NoBody(EventBody):
    pass


class ByCommand(EventBody):
    command: str


class InventoryUpdated(EventBody):
    part: str
    count: int


class IdentityRenewed(EventBody):
    serial: str


class IdentityRejected(EventBody):
    reason: str
    message: str
    peer: str | None = None
    path: str
    identifier: str | None = None
    # From the IdentityError: the certificate presented, the one bound, the enrollment it came from.
    serial: str | None = None
    bound_serial: str | None = None
    enrollment_id: int | None = None


class MessageRejected(EventBody):
    reason: str
    message: str
    path: str


DEVICE_ENROLLED = EventType(
    "device_enrolled", Severity.INFO, DeviceEnrolled,
    "A device enrolled (Authenticate for a new or unenrolled UDID) and is bound to its certificate",
    example={
        "identifier": "00008030-001A2B3C4D5E802E",
        "serial_number": "F2LXK0ABCDEF",
        "model": "iPhone15,2",
        "os_version": "17.5.1",
        "cert_serial": "5A3F9C0D11E2",
        "identity_source": "signature",
    },
)
DEVICE_REAUTHENTICATED = EventType(
    "device_reauthenticated", Severity.INFO, DeviceEnrolled,
    "An enrolled device sent Authenticate again (re-enrolment, possibly with a new identity)",
    example={
        "identifier": "00008030-001A2B3C4D5E802E",
        "serial_number": "F2LXK0ABCDEF",
        "model": "iPhone15,2",
        "os_version": "17.6",
        "cert_serial": "5A3F9C0D11F7",
        "identity_source": "tls",
    },
)
PUSH_TOKEN_UPDATED = EventType(
    "push_token_updated", Severity.INFO, PushTokenUpdated,
    "A TokenUpdate changed the device's (or a user channel's) push token, PushMagic or UnlockToken",
    example={"channel": "device", "changed": True, "unlock_token": False},
)
DEVICE_UNENROLLED = EventType(
    "device_unenrolled", Severity.WARNING, DeviceUnenrolled,
    "The device checked out (its MDM profile was removed); its active commands failed",
    example={"identifier": "00008030-001A2B3C4D5E802E", "commands_failed": 2},
)
BOOTSTRAP_TOKEN_SET = EventType(
    "bootstrap_token_set", Severity.INFO, NoBody, "The device escrowed a bootstrap token",
    example={},
)
BOOTSTRAP_TOKEN_CLEARED = EventType(
    "bootstrap_token_cleared", Severity.INFO, NoBody, "The device cleared its escrowed bootstrap token",
    example={},
)
BOOTSTRAP_TOKEN_ESCROW_READ = EventType(
    "bootstrap_token_escrow_read", Severity.INFO, NoBody, "The device read back its escrowed bootstrap token",
    example={},
)
DEVICE_WIPED = EventType(
    "device_wiped", Severity.WARNING, ByCommand,
    "The device confirmed an erase",
    example={"command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"},
)
DEVICE_UNMANAGED = EventType(
    "device_unmanaged", Severity.WARNING, ByCommand, "The device confirmed the removal of its MDM profile",
    example={"command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"},
)
INVENTORY_UPDATED = EventType(
    "inventory_updated", Severity.INFO, InventoryUpdated,
    "An inventory answer replaced a part of the inventory",
    example={"part": "installed_applications", "count": 87},
)
DEVICE_IDENTITY_RENEWED = EventType(
    "device_identity_renewed", Severity.INFO, IdentityRenewed,
    "A renewed certificate issued to the device took over its binding at first use",
    example={"serial": "5A3F9C0D11F7"},
)
SECURITY_IDENTITY_REJECTED = EventType(
    "security_identity_rejected", Severity.WARNING, IdentityRejected,
    "A request on the iOS listener was refused for its identity (missing, invalid, not bound, "
    "replayed, or another device's); beyond the first few per source, aggregated",
    example={
        "reason": "not_bound",
        "message": "the certificate is not bound to this device",
        "peer": "203.0.113.7",
        "path": "/mdm/server",
        "identifier": "00008030-001A2B3C4D5E802E",
        "serial": "7C11D0AA02",
        "bound_serial": "5A3F9C0D11E2",
    },
)
SECURITY_MESSAGE_REJECTED = EventType(
    "security_message_rejected", Severity.WARNING, MessageRejected,
    "A well-identified device sent something not acceptable now (a replayed report)",
    example={
        "reason": "replayed",
        "message": "a result for a command that is not in flight",
        "path": "/mdm/server",
    },
)
