"""The seam between the delivery worker and a transport to the core server.

The worker reads the outbox in order, hands a transport one batch at a time and acts on the
``SendResult``: ``DELIVERED`` marks the batch delivered; ``RETRY`` keeps it and backs off (an
outage, a 5xx, a timeout, a TLS failure, garbage: it never counts as a refusal); ``REJECTED``
means the receiver refused the events named in ``rejected`` (or, when empty, the whole batch) for
good; the worker counts a refusal on them and dead-letters them after the configured number.
When ``rejected`` names some events, every OTHER event of the batch was accepted (delivered);
when it is empty, the whole batch was refused (the worker splits it to find the culprit).

A transport keeps its own connection and session state between calls, never raises for a
failure of the receiver (it answers ``RETRY`` with a reason), and never logs a secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from typing import Protocol as TypingProtocol


@dataclass(frozen=True)
class DeviceRecord:
    """What the core server keeps of a device, sent with each event about it (the Open API
    transport writes it as ``KLMDM_DEVICE_*`` attributes)."""

    id: int
    protocol: str  # "ios" | "kes"
    status: str
    name: str | None = None
    model: str | None = None
    os_version: str | None = None
    serial_number: str | None = None
    udid: str | None = None
    user: str | None = None
    last_seen_at: datetime | None = None


@dataclass(frozen=True)
class OutboundEvent:
    """One outbox row as it leaves: ``uuid`` is the receiver's idempotency key."""

    id: int
    uuid: str
    type: str
    severity: str
    created_at: datetime
    body: Mapping[str, Any]
    device_id: int | None = None
    user_id: int | None = None
    device: DeviceRecord | None = None


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    # Short machine-readable reason for metrics and the core-link light: "ok", "http_503",
    # "http_400", "connect_error", "tls_error", "timeout", "bad_response", "auth_failed", ...
    reason: str = "ok"
    # One line for the log and the light, never a secret or a whole body.
    detail: str = ""
    # The receiver asked for this pause (Retry-After), in seconds.
    retry_after: float | None = None
    # REJECTED: the uuids the receiver refused one by one; empty: the whole batch.
    rejected: frozenset[str] = field(default_factory=frozenset)


class Transport(TypingProtocol):
    name: str

    async def send(self, batch: Sequence[OutboundEvent]) -> SendResult: ...

    async def aclose(self) -> None: ...
