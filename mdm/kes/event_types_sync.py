"""Events of the KES sync: what the agent reports (its own events, inventory, location, pictures),
the answers that change the device's state (wipe, removal), and refused sync messages."""

from __future__ import annotations

from typing import Any

from mdm.core.events import EventBody, EventType
from mdm.db.models import Severity


class AgentEvent(EventBody):
    agent_type: str  # the agent's own event type
    at: str
    body: dict[str, Any] | None = None


class InventoryParts(EventBody):
    parts: list[str]


class LocationUpdated(EventBody):
    command: str | None = None
    latitude: float
    longitude: float
    accuracy_m: float | None = None
    at: str


class MugshotReceived(EventBody):
    command: str
    mugshot_id: int
    content_type: str
    size: int


class ByCommand(EventBody):
    command: str


class Removed(EventBody):
    command: str
    commands_failed: int


class SyncRejected(EventBody):
    reason: str
    message: str
    path: str
    peer: str | None = None


KES_AGENT_EVENT = EventType(
    "kes_agent_event", Severity.INFO, AgentEvent,
    "An event the KES agent reported in a sync (its type, time and body as sent; the severity is "
    "the agent's: info, warning or functional_failure)",
    example={
        "agent_type": "app_blocked",
        "at": "2026-12-03T11:58:40+00:00",
        "body": {"package": "com.example.game"},
    },
)
KES_INVENTORY_UPDATED = EventType(
    "kes_inventory_updated", Severity.INFO, InventoryParts,
    "A KES device sent inventory (a sync's deltas or a RefreshDeviceInfo result): the parts replaced",
    example={"parts": ["hardware", "applications"]},
)
KES_LOCATION_UPDATED = EventType(
    "kes_location_updated", Severity.INFO, LocationUpdated,
    "A KES device reported its location (a Locate result), stored in the inventory's location part",
    example={
        "command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9",
        "latitude": 55.7558,
        "longitude": 37.6173,
        "accuracy_m": 12.5,
        "at": "2026-12-03T11:58:40+00:00",
    },
)
KES_MUGSHOT_RECEIVED = EventType(
    "kes_mugshot_received", Severity.INFO, MugshotReceived,
    "A KES device uploaded the picture of a Mugshot command (stored; the command completed)",
    example={
        "command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9",
        "mugshot_id": 5,
        "content_type": "image/jpeg",
        "size": 48213,
    },
)
KES_DEVICE_WIPED = EventType(
    "kes_device_wiped", Severity.WARNING, ByCommand,
    "A KES device reported a factory reset done (Wipe): the device's status is wiped",
    example={"command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"},
)
KES_DEVICE_REMOVED = EventType(
    "kes_device_removed", Severity.WARNING, Removed,
    "A KES device confirmed a Remove: it is unmanaged (its certificate is refused), its push token "
    "cleared and its other pending commands failed",
    example={"command": "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9", "commands_failed": 1},
)
KES_SYNC_REJECTED = EventType(
    "kes_sync_rejected", Severity.WARNING, SyncRejected,
    "A bound KES device sent a sync or mugshot that was refused (unknown or foreign command, a "
    "conflicting result, a reused request id); nothing of it was applied",
    example={
        "reason": "request_id_reused",
        "message": "request id 9 was used with another body",
        "path": "/kes/v1/sync",
        "peer": "198.51.100.40",
    },
)
