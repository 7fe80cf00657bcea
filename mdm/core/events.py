"""Transactional outbox and the event catalog.

Every event type is declared once, with ``EventType`` in its feature's ``event_types.py``: name,
severity, a body model and a description (the contract the core server reads). ``emit`` takes a
declared type, validates the body against its model and adds the event to the caller's
transaction, so the state change and the event that reports it commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.store_events import add_event, insert_event
from mdm.db.models import Event, Severity, utcnow


class EventBody(BaseModel):
    """Base of body models: unknown fields are refused, so the catalog stays the contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UndeclaredEvent(Exception):
    """``emit`` was given a type that is not in the catalog (a programming error)."""


@dataclass(frozen=True)
class EventType:
    name: str
    severity: Severity
    body: type[EventBody]
    description: str
    # A typical body, shown in docs/events.md; checked against ``body`` at declaration.
    example: Mapping[str, Any] | None = None
    # Every declared type by name; filled by declaration, checked by ``emit``.
    declared: ClassVar[dict[str, EventType]] = {}

    def __post_init__(self) -> None:
        known = EventType.declared.get(self.name)
        if known is not None and known != self:
            raise ValueError(f"event type {self.name!r} is declared twice")
        if self.example is not None:
            self.body.model_validate(self.example)
        EventType.declared[self.name] = self


def event_values(
    type: EventType,
    *,
    severity: Severity | None = None,
    device_id: int | None = None,
    user_id: int | None = None,
    **body: Any,
) -> dict[str, Any]:
    """The outbox row of an event of a declared ``type`` (checked as ``emit`` checks it), for a
    store that writes it in a statement of its own making (``emit`` and ``emit_now`` use it)."""
    if not isinstance(type, EventType) or EventType.declared.get(type.name) is not type:
        raise UndeclaredEvent(f"event type {type!r} is not declared in the catalog")
    try:
        checked = type.body.model_validate(body).model_dump(mode="json", exclude_unset=True)
    except ValidationError as exc:
        raise UndeclaredEvent(f"event {type.name}: body does not match its model: {exc}") from None
    return {
        "uuid": str(uuid.uuid4()),
        "type": type.name,
        "severity": (severity or type.severity).value,
        "device_id": device_id,
        "user_id": user_id,
        "body": checked,
        "created_at": utcnow(),
        "delivery_attempts": 0,
    }


def emit(
    session: AsyncSession,
    type: EventType,
    *,
    severity: Severity | None = None,
    device_id: int | None = None,
    user_id: int | None = None,
    **body: Any,
) -> Event:
    """Add an event of a declared ``type`` to the caller's transaction. ``severity`` overrides the
    declared one only where the catalog says the type's severity varies."""
    event = Event(**event_values(type, severity=severity, device_id=device_id, user_id=user_id, **body))
    add_event(session, event)
    return event


async def emit_now(
    session: AsyncSession,
    type: EventType,
    *,
    severity: Severity | None = None,
    device_id: int | None = None,
    user_id: int | None = None,
    **body: Any,
) -> None:
    """``emit`` for the hot paths: the event is written at once with one Core INSERT (no ORM
    object, no flush of its own), in the caller's transaction all the same. Objects the session
    still holds (events ``emit`` added before) are flushed first, so that the outbox keeps the
    order in which the events were emitted."""
    await insert_event(
        session, event_values(type, severity=severity, device_id=device_id, user_id=user_id, **body)
    )
