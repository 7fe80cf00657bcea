"""The fleet gauges of /metrics, read from the database when Prometheus scrapes."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import metrics, store_commands, store_devices, store_events
from mdm.db.enums import Protocol


async def refresh(session: AsyncSession) -> None:
    """Set the queue depth, undelivered events and devices by protocol and status."""
    queued = await store_commands.queue_depth(session)
    undelivered = await store_events.undelivered_count(session)
    counts = await store_devices.devices_by_state(session)
    metrics.COMMANDS_QUEUED.set(queued)
    metrics.EVENTS_UNDELIVERED.set(undelivered)
    metrics.DEVICES.clear()
    for protocol, status, count in counts:
        metrics.DEVICES.labels(Protocol(protocol).name.lower(), status).set(count)
