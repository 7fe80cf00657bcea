"""The counters a push client keeps of its own sends (``mdm bench push``, tests, debugging): sent,
failures by reason (bounded), outcomes, last success and last failure.

``record`` runs once per push: an accepted push costs an increment and a clock read; the
outcome counts and the last success's time are derived when read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mdm.push.types import Outcome, PushResult

MAX_REASONS = 100  # distinct failure reasons kept; the rest count as "other"
_SENT = Outcome.SENT


@dataclass
class TransportStats:
    sent: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by reason
    not_sent: dict[str, int] = field(default_factory=dict)  # by outcome, every outcome but "sent"
    last_success_time: float = 0.0  # time.time() of the last accepted push, 0 before one
    last_failure: str = ""

    @property
    def by_outcome(self) -> dict[str, int]:
        counts = {_SENT.value: self.sent} if self.sent else {}
        counts.update(self.not_sent)
        return counts

    @property
    def last_success(self) -> datetime | None:
        return datetime.fromtimestamp(self.last_success_time, UTC) if self.last_success_time else None

    def record(self, result: PushResult) -> None:
        outcome = result.outcome
        if outcome is _SENT:
            self.sent += 1
            self.last_success_time = time.time()
            return
        self.not_sent[outcome.value] = self.not_sent.get(outcome.value, 0) + 1
        reason = result.reason or outcome.value
        key = reason if len(self.failed) < MAX_REASONS or reason in self.failed else "other"
        self.failed[key] = self.failed.get(key, 0) + 1
        self.last_failure = reason
