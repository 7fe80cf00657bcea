"""Transactional outbox: ``emit`` adds the event to the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Event, Severity


def emit(
    session: AsyncSession,
    type: str,
    severity: Severity = Severity.INFO,
    *,
    device_id: int | None = None,
    user_id: int | None = None,
    **body: Any,
) -> Event:
    event = Event(
        uuid=str(uuid.uuid4()),
        type=type,
        severity=severity.value,
        device_id=device_id,
        user_id=user_id,
        body=body,
    )
    session.add(event)
    return event
