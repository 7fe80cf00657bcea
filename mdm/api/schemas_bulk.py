"""Request and response models of bulk operations (``/api/v1/commands``, ``/api/v1/bulk``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mdm.api.schemas import PageQuery, Timestamp
from mdm.core.bulk import BulkView
from mdm.db.enums import CommandStatus
from mdm.db.models import BulkOperation, BulkState

BulkStateName = Literal[tuple(s.value for s in BulkState)]  # type: ignore[valid-type]


class BulkTargetOut(BaseModel):
    kind: str = Field(description="all, group or devices")
    group: int | None = Field(default=None, description="the group (its subgroups included)")


class BulkOut(BaseModel):
    id: int
    href: str = Field(description="where to follow it: GET this path")
    type: str
    args: dict[str, Any] = Field(description="the arguments as stored, secrets masked")
    state: BulkStateName  # type: ignore[valid-type]
    target: BulkTargetOut
    created_by: str | None
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None = Field(description="when queuing (or the recall) ended")
    error: str | None = Field(default=None, description="why queuing stopped (state failed)")
    targeted: int = Field(description="devices the target matched at the request")
    queued: int = Field(description="commands queued so far")
    skipped: int = Field(description="targeted devices that did not get it (GET .../skipped says why)")
    skipped_reasons: dict[str, int] = Field(description="skipped devices per reason")
    woken: int = Field(description="wake-up pushes the push provider accepted")
    delivered: int | None = Field(default=None, description="commands sent to their device at least once")
    completed: int | None = None
    failed: int | None = None
    pending: int | None = Field(default=None, description="commands still queued or in flight")
    recalled: int = Field(description="commands a recall removed before delivery")

    @classmethod
    def of(cls, op: BulkOperation, view: BulkView | None = None) -> BulkOut:
        out = cls(
            id=op.id, href=f"/api/v1/bulk/{op.id}", type=op.type, args=op.args or {}, state=op.state,
            target=BulkTargetOut(kind=op.target, group=op.group_id), created_by=op.created_by,
            created_at=op.created_at, updated_at=op.updated_at, finished_at=op.finished_at, error=op.error,
            targeted=op.targeted, queued=op.queued, skipped=op.skipped,
            skipped_reasons=dict(op.skipped_reasons or {}), woken=op.woken, recalled=op.recalled,
        )
        if view is not None:
            out.delivered = view.delivered
            out.completed = view.count(CommandStatus.COMPLETED)
            out.failed = view.count(CommandStatus.FAILED) + view.count(CommandStatus.REMOVE_FAILED)
            out.pending = view.count(CommandStatus.PROCESSING) + view.count(CommandStatus.REMOVING)
        return out


class BulkListQuery(PageQuery):
    pass


class BulkPage(BaseModel):
    items: list[BulkOut]
    next_cursor: str | None


class SkippedQuery(PageQuery):
    limit: int = Field(default=100, ge=1, le=1000, description="page size (1..1000)")


class SkippedOut(BaseModel):
    device: int
    reason: str


class SkippedPage(BaseModel):
    items: list[SkippedOut]
    next_cursor: str | None = Field(description="the device id to page on from, or null at the end")
