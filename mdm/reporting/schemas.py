"""Admin API models of the outbox's dead letters (``/api/v1/events/dead-letter``)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator

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


class ReplayIn(Strict):
    ids: list[int] | None = Field(default=None, min_length=1, max_length=1000,
                                  description="these dead letters (at most 1000 per request)")
    all: bool = Field(default=False, description="every dead letter")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.ids is None) == (not self.all):
            raise ValueError('give either "ids": [...] or "all": true')
        if self.ids is not None and any(i < 1 or i > 2**62 for i in self.ids):
            raise ValueError("ids must be positive integers")
        return self


class ReplayOut(BaseModel):
    requeued: int = Field(description="dead letters put back in the outbox")
