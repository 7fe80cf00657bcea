"""What the push dispatcher tells about the services it pushes through: their names, what this
process saw of each (``GET /api/v1/push/status``), the devices whose token was refused, and the
accepted pushes of a batch counted per wake-up reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mdm.db.models import Protocol
from mdm.push.store_owed import DueRow
from mdm.push.types import Outcome, PushResult

SERVICE_NAMES: dict[Protocol, str] = {Protocol.IOS: "apns", Protocol.KES: "fcm"}
_NAMES: dict[int, str] = {int(p): name for p, name in SERVICE_NAMES.items()}


def service_name(protocol: Protocol | int) -> str:
    name = _NAMES.get(protocol)  # (an int key: no enum conversion on every push)
    return name if name is not None else Protocol(protocol).name.lower()


def accepted_by_reason(answered: Sequence[tuple[DueRow, PushResult]]) -> dict[str, int]:
    """The accepted pushes of a batch, counted per wake-up reason (``bulk:<id>``, ...)."""
    counts: dict[str, int] = {}
    for row, result in answered:
        if result.outcome is Outcome.SENT:
            counts[row.reason] = counts.get(row.reason, 0) + 1
    return counts


@dataclass
class ServiceStats:
    """What this process saw of one push service (``GET /api/v1/push/status``)."""

    configured: bool
    circuit_open: bool = False
    sent: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    last_success_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class InvalidToken:
    device_id: int
    identifier: str
    protocol: Protocol
    push_changed_at: datetime | None
