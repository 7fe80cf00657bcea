"""Admin API models of the SCEP routes (also their OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from mdm.scep import challenges
from mdm.scep.tables import ScepTransaction


class ScepRequestOut(BaseModel):
    id: int
    transaction_id: str
    message_type: str
    status: str
    subject: str
    user_id: int | None
    renews_serial: str | None
    cert_serial: str | None
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None

    @classmethod
    def of(cls, row: ScepTransaction) -> ScepRequestOut:
        return cls(
            id=row.id,
            transaction_id=row.transaction_id,
            message_type=row.message_type,
            status=row.status,
            subject=row.subject,
            user_id=row.user_id,
            renews_serial=row.renews_serial,
            cert_serial=row.cert_serial,
            created_at=row.created_at,
            decided_at=row.decided_at,
            decided_by=row.decided_by,
        )


class ScepRequestList(BaseModel):
    items: list[ScepRequestOut]


class ScepRequestQuery(BaseModel):
    status: Literal["pending", "issued", "rejected"] | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ChallengeIn(BaseModel):
    user: str | None = Field(default=None, description="owner of the certificate issued with it")
    purpose: str = Field(default="admin", min_length=1, max_length=64)
    ttl_seconds: int = Field(default=3600, ge=60, le=challenges.MAX_TTL_SECONDS)


class ChallengeOut(BaseModel):
    challenge: str
    expires_at: datetime
