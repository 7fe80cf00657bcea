"""What a KES device reports about itself, shaped as the device record holds it.

Inventory parts have the iOS shape (``mdm.ios.inventory``), so that the admin API and the core
server read one format: ``Device.inventory[part] = {"refreshed_at": iso, "values": {...}}``, or
``{"refreshed_at": iso, "items": [...]}`` for a list (``apps``). A sync's ``inventory`` object is
a delta: each part it names replaces the stored part, the others stay. ``device_info`` also fills
the device's columns; the Locate result becomes the ``location`` part; the sync's ``status`` is
kept in the device's attributes (``kes_status``) with its time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

LOCATION_PART = "location"
STATUS_ATTRIBUTE = "kes_status"
LOCAL_SETTINGS_ATTRIBUTE = "kes_local_settings"
OS_NAME = "Android"
# device_info key -> device column (and the column's length).
_COLUMNS: dict[str, tuple[str, int]] = {
    "name": ("name", 255),
    "model": ("model", 255),
    "os_version": ("os_version", 64),
    "build": ("build_version", 64),
    "serial_number": ("serial_number", 128),
    "imei": ("imei", 64),
    "phone_number": ("phone_number", 64),
}
# The device columns an inventory delta may change (besides ``inventory``).
FACT_COLUMNS = ("name", "model", "os_name", "os_version", "build_version", "serial_number", "imei",
                "phone_number", "attributes")


@dataclass(slots=True)
class DeviceUpdate:
    """What one sync writes to the device row: inventory parts (replaced whole) and the columns
    whose values change."""

    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.parts or self.changes)


def part_entry(value: Mapping[str, Any], refreshed_at: datetime) -> dict[str, Any]:
    """A reported part as stored: a part carrying ``items`` (a list) is a list part."""
    items = value.get("items")
    if isinstance(items, list) and len(value) == 1:
        return {"refreshed_at": refreshed_at.isoformat(), "items": list(items)}
    return {"refreshed_at": refreshed_at.isoformat(), "values": dict(value)}


def location_entry(data: Mapping[str, Any], received_at: datetime) -> dict[str, Any]:
    """The Locate result (``latitude``, ``longitude``, ``accuracy_m``, ``at``) as the location part;
    ``refreshed_at`` is when the device took the fix (``at``), else when it arrived."""
    values = {k: data[k] for k in ("latitude", "longitude", "accuracy_m", "at") if k in data}
    at = data.get("at")
    return {"refreshed_at": at if isinstance(at, str) else received_at.isoformat(), "values": values}


def apply_parts(
    current: Mapping[str, Any], parts: Mapping[str, Mapping[str, Any]], now: datetime, update: DeviceUpdate
) -> None:
    """Add a delta's parts to ``update``; ``device_info`` also sets the device's columns (only
    those that change relative to ``current``, the device's ``FACT_COLUMNS``)."""
    for name, value in parts.items():
        update.parts[name] = part_entry(value, now)
    info = parts.get("device_info")
    if isinstance(info, Mapping):
        for key, (column, limit) in _COLUMNS.items():
            text = info.get(key)
            if isinstance(text, str) and text:
                _change(current, update, column, text[:limit])
        _change(current, update, "os_name", OS_NAME)


def apply_status(
    current: Mapping[str, Any], status: Mapping[str, Any] | None, local: Mapping[str, Any] | None,
    now: datetime, update: DeviceUpdate,
) -> None:
    """The sync's ``status`` and ``local_settings`` into the device's attributes."""
    if status is None and local is None:
        return
    attributes = dict(update.changes.get("attributes", current.get("attributes") or {}))
    if status is not None:
        attributes[STATUS_ATTRIBUTE] = {**status, "at": now.isoformat()}
    if local is not None:
        attributes[LOCAL_SETTINGS_ATTRIBUTE] = dict(local)
    _change(current, update, "attributes", attributes)


def _change(current: Mapping[str, Any], update: DeviceUpdate, column: str, value: Any) -> None:
    if current.get(column) != value:
        update.changes[column] = value
    else:
        update.changes.pop(column, None)
