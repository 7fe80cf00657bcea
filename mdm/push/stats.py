"""The counters a push client keeps of its own sends (``mdm bench push``, tests, debugging): sent,
failures by reason (bounded), outcomes, last success and last failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from mdm.push.types import Outcome, PushResult

MAX_REASONS = 100  # distinct failure reasons kept; the rest count as "other"


@dataclass
class TransportStats:
    sent: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by reason
    by_outcome: dict[str, int] = field(default_factory=dict)
    last_success: datetime | None = None
    last_failure: str = ""

    def record(self, result: PushResult) -> None:
        self.by_outcome[result.outcome.value] = self.by_outcome.get(result.outcome.value, 0) + 1
        if result.outcome is Outcome.SENT:
            self.sent += 1
            self.last_success = datetime.now(UTC)
        else:
            reason = result.reason or result.outcome.value
            key = reason if len(self.failed) < MAX_REASONS or reason in self.failed else "other"
            self.failed[key] = self.failed.get(key, 0) + 1
            self.last_failure = reason
