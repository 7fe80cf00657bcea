"""Push failures counted per service and reason, reported as one ``push_failures_aggregated``
event per (service, reason) per interval: never one event per failed push at fleet scale. The
reasons are the dispatcher's bounded metric labels, so memory is bounded too."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from mdm.db.models import utcnow

REPORT_SECONDS = 300.0


class FailureTally:
    def __init__(self, interval_seconds: float = REPORT_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self._counts: dict[tuple[str, str, str], int] = {}  # (service, reason, outcome) -> count
        self._since: datetime = utcnow()
        self._since_mono = time.monotonic()

    def add(self, service: str, reason: str, outcome: str) -> None:
        key = (service, reason, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1

    def due(self) -> bool:
        """Whether the interval ended: ``take_due`` would report it (if it saw failures) and start
        the next one."""
        return time.monotonic() - self._since_mono >= self.interval_seconds

    def take_due(self) -> list[dict[str, Any]]:
        """The bodies of the interval that ended, if it did (none without failures), and start the
        next one; [] before the interval ends."""
        if time.monotonic() - self._since_mono < self.interval_seconds:
            return []
        since, until = self._since, utcnow()
        counts, self._counts = self._counts, {}
        self._since, self._since_mono = until, time.monotonic()
        return [
            {"service": s, "reason": r, "outcome": o, "count": n, "since": since.isoformat(),
             "until": until.isoformat(), "interval_seconds": self.interval_seconds}
            for (s, r, o), n in sorted(counts.items())
        ]
