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
)
KES_INVENTORY_UPDATED = EventType(
    "kes_inventory_updated", Severity.INFO, InventoryParts,
    "A KES device sent inventory (a sync's deltas or a RefreshDeviceInfo result): the parts replaced",
)
KES_LOCATION_UPDATED = EventType(
    "kes_location_updated", Severity.INFO, LocationUpdated,
    "A KES device reported its location (a Locate result), stored in the inventory's location part",
)
KES_MUGSHOT_RECEIVED = EventType(
    "kes_mugshot_received", Severity.INFO, MugshotReceived,
    "A KES device uploaded the picture of a Mugshot command (stored; the command completed)",
)
KES_DEVICE_WIPED = EventType(
    "kes_device_wiped", Severity.WARNING, ByCommand,
    "A KES device reported a factory reset done (Wipe): the device's status is wiped",
)
KES_DEVICE_REMOVED = EventType(
    "kes_device_removed", Severity.WARNING, Removed,
    "A KES device confirmed a Remove: it is unmanaged (its certificate is refused), its push token "
    "cleared and its other pending commands failed",
)
KES_SYNC_REJECTED = EventType(
    "kes_sync_rejected", Severity.WARNING, SyncRejected,
    "A bound KES device sent a sync or mugshot that was refused (unknown or foreign command, a "
    "conflicting result, a reused request id); nothing of it was applied",
)
