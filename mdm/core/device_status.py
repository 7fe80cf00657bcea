"""A device's status (ok, wiped, removing, remove_failed, unmanaged) changes only through
``set_status``, which reports the change (``device_status_changed``) in the caller's transaction.
The protocol's own event (device_wiped, device_unenrolled, kes_device_removed, ...) says what
happened; this one gives the core server one uniform record of every status transition."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.event_types import DEVICE_STATUS_CHANGED
from mdm.db.enums import DeviceStatus
from mdm.db.models import Device


def set_status(session: AsyncSession, device: Device, status: DeviceStatus, reason: str) -> bool:
    """Set ``device.status`` and emit ``device_status_changed`` (previous, new, why); nothing
    when it already has that status. True when it changed."""
    previous = device.status
    if previous == status.value:
        return False
    device.status = status.value
    events.emit(
        session, DEVICE_STATUS_CHANGED, device_id=device.id, status=status.value, previous=previous,
        reason=reason,
    )
    return True
