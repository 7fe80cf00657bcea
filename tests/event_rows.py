"""Outbox rows of any type, for tests of the event listing and its filters.

``mdm.core.events.emit`` only takes declared types; these tests need arbitrary types and
severities (as rows written by another version of the service would be), so they add rows
directly.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Event, Severity


def outbox_row(
    session: AsyncSession, type: str, severity: Severity = Severity.INFO, *, device_id: int | None = None,
    **body: Any,
) -> Event:
    event = Event(uuid=str(uuid.uuid4()), type=type, severity=severity.value, device_id=device_id, body=body)
    session.add(event)
    return event


# What the server writes of itself (its start, its stop), not a request's doing: tests that check
# "a refused request records nothing" leave these out.
SERVER_OWN = frozenset({"service_started", "service_stopped", "listener_failed"})
