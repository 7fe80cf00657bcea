"""The core link's state as the delivering replica sees it: up or down, since when, the last
success and failure, consecutive failures, the backlog. Pure bookkeeping (no I/O): the worker
feeds it outcomes and writes ``snapshot()`` to the ``reporting_link`` row on every transition and
every few seconds; ``on_failure``/``on_success`` answer the transition to report as an event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mdm.reporting.store import LinkRow

# The link is "down" after this many failed attempts in a row, or this long failing.
DOWN_AFTER_FAILURES = 3
DOWN_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class WentDown:
    reason: str
    detail: str
    since: datetime
    attempts: int


@dataclass(frozen=True)
class CameUp:
    down_since: datetime
    down_seconds: float
    attempts: int


class LinkMonitor:
    def __init__(self, deliverer: str, now: datetime, *, down_after_failures: int = DOWN_AFTER_FAILURES,
                 down_after_seconds: float = DOWN_AFTER_SECONDS) -> None:
        self.deliverer = deliverer
        self.down_after_failures = down_after_failures
        self.down_after_seconds = down_after_seconds
        self.up = True
        self.since = now
        self.failing_since: datetime | None = None
        self.last_success_at: datetime | None = None
        self.last_failure_at: datetime | None = None
        self.reason: str | None = None
        self.detail: str | None = None
        self.failures = 0
        self.backlog = 0
        self.oldest: datetime | None = None
        self.dead_letters = 0

    def resume(self, row: LinkRow | None) -> None:
        """Take over the state the previous deliverer left (a replica taking over an outage
        reports its end, not a new one)."""
        if row is None or row.up or not self.up:
            return
        self.up, self.since, self.failing_since = False, row.since, row.since
        self.failures = row.consecutive_failures
        self.reason, self.detail = row.last_failure_reason, row.last_failure_detail
        self.last_failure_at, self.last_success_at = row.last_failure_at, row.last_success_at

    def on_success(self, now: datetime) -> CameUp | None:
        self.last_success_at = now
        came_up = None
        if not self.up:
            down_since = self.since
            came_up = CameUp(down_since, (now - down_since).total_seconds(), self.failures)
            self.up, self.since = True, now
        self.failures, self.failing_since = 0, None
        return came_up

    def on_failure(self, reason: str, detail: str, now: datetime) -> WentDown | None:
        self.last_failure_at, self.reason, self.detail = now, reason, detail
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        failing_for = (now - self.failing_since).total_seconds()
        if self.up and (self.failures >= self.down_after_failures or failing_for >= self.down_after_seconds):
            self.up, self.since = False, self.failing_since
            return WentDown(reason, detail, self.failing_since, self.failures)
        return None

    def snapshot(self, now: datetime) -> LinkRow:
        return LinkRow(
            up=self.up, since=self.since, last_success_at=self.last_success_at,
            last_failure_at=self.last_failure_at, last_failure_reason=self.reason,
            last_failure_detail=self.detail, consecutive_failures=self.failures, backlog=self.backlog,
            oldest_undelivered_at=self.oldest, dead_letters=self.dead_letters, deliverer=self.deliverer,
            updated_at=now,
        )  # fmt: skip
