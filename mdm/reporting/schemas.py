"""Admin API models of the outbox's dead letters (``/api/v1/events/dead-letter``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel

from mdm.api.schemas import PageQuery, Strict, Timestamp
from mdm.core.store_outbox import DeadEvent


class DeadLetterQuery(PageQuery):
    type: str | None = Field(default=None, max_length=64, description="only events of this type")
    device: int | None = Field(default=None, ge=1, le=2**62, description="only events of this device")


class DeadLetterOut(BaseModel):
    id: int
    uuid: str
    type: str
    severity: str
    device_id: int | None
    created_at: Timestamp
    dead_at: Timestamp
    refusals: int = Field(description="times the core server refused it (0: it aged out)")
    last_error: str | None = Field(description="why it was given up on")

    @classmethod
    def of(cls, e: DeadEvent) -> DeadLetterOut:
        return cls(id=e.id, uuid=e.uuid, type=e.type, severity=e.severity, device_id=e.device_id,
                   created_at=e.created_at, dead_at=e.dead_at, refusals=e.refusals, last_error=e.last_error)


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


class ReplayIds(Strict):
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        min_length=1, max_length=1000, description="these dead letters (at most 1000 per request)")


class ReplayAll(Strict):
    all: Literal[True] = Field(description="every dead letter")


class ReplayIn(RootModel[ReplayIds | ReplayAll]):
    """Either ``{"ids": [...]}`` or ``{"all": true}`` (the document says so with ``anyOf``, so
    that a body it admits is one the service takes)."""


class ReplayOut(BaseModel):
    requeued: int = Field(description="dead letters put back in the outbox")
