"""Admin API models of push (``/api/v1/push/...``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mdm.api.schemas import PROTOCOL_NAMES, PageQuery, ProtocolName, Timestamp
from mdm.push.service_stats import InvalidToken, ServiceStats


class ServiceStatus(BaseModel):
    configured: bool = Field(description="a transport is configured (certificate or service account)")
    circuit_open: bool = Field(description="credentials were refused: pushes are held until replaced")
    sent: int = Field(description="pushes accepted since this process started")
    failures: dict[str, int] = Field(description="pushes not accepted since start, by the service's reason")
    last_success_at: Timestamp | None

    @classmethod
    def of(cls, stats: ServiceStats) -> ServiceStatus:
        return cls(configured=stats.configured, circuit_open=stats.circuit_open, sent=stats.sent,
                   failures=dict(stats.failures), last_success_at=stats.last_success_at)


class PushStatus(BaseModel):
    owed: int = Field(description="wake-ups owed to devices (persisted)")
    invalid_tokens: int = Field(description="devices whose push token the service refused for good")
    services: dict[str, ServiceStatus]
    certificate: dict[str, Any] | None = Field(
        default=None, description="the APNs push certificate (topic, expiry, ...) when one is installed"
    )


class InvalidTokenQuery(PageQuery):
    pass


class InvalidTokenOut(BaseModel):
    id: int
    identifier: str
    protocol: ProtocolName
    push_changed_at: Timestamp | None

    @classmethod
    def of(cls, row: InvalidToken) -> InvalidTokenOut:
        return cls(id=row.device_id, identifier=row.identifier,
                   protocol=PROTOCOL_NAMES[row.protocol],  # type: ignore[arg-type]
                   push_changed_at=row.push_changed_at)


class InvalidTokenPage(BaseModel):
    items: list[InvalidTokenOut]
    next_cursor: str | None
