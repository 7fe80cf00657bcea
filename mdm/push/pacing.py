"""The re-push budget: background wake-ups (re-pushes of silent devices with queued commands, the
daily sweep of silent devices) are sent at ``push.repush_per_second`` at most, on average, so that
a wave of them after a bulk command to 10^6 devices, most of which stay silent, cannot take the
server's CPU from the devices that answer. First wake-ups (a new command, a policy, NotNow's
retry, recovery) are never paced.

A token bucket (a burst of one second's budget or one batch, whichever is larger) decides how
many background rows of a taken batch are sent; the rest are deferred, not dropped: moved to a
horizon that advances by their number divided by the rate, so that each deferred group comes due
when the bucket can send it. Deferring
costs one UPDATE per batch, a send ~150 µs per push: a backlog of 10^6 overdue re-pushes (after
an outage, or a wave) is spread in ~1,000 batches instead of being sent at once.

The budget is per dispatcher (per process): N replicas send up to N times the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from mdm.push.tables import REPUSH

# The wake-up reasons that are paced: what the dispatcher itself re-pushes, and the sweep's.
PACED_REASONS = frozenset({REPUSH, "silent"})


class RepushBudget:
    def __init__(self, rate: Callable[[], float], burst: Callable[[], int],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        # Read at each use: both follow `mdm reload` of push.repush_per_second / push.batch_size.
        self._rate = rate
        self._burst = burst
        self._monotonic = monotonic
        self._tokens: float | None = None  # full at the first use
        self._at = 0.0
        self._horizon: datetime | None = None

    @property
    def paced(self) -> bool:
        return self._rate() > 0

    def room(self) -> int | None:
        """Background rows this batch may send (None: unpaced)."""
        rate = self._rate()
        if rate <= 0:
            return None
        now, burst = self._monotonic(), float(max(1, self._burst(), int(rate)))
        if self._tokens is None:
            self._tokens = burst
        else:
            self._tokens = min(burst, self._tokens + (now - self._at) * rate)
        self._at = now
        return int(self._tokens)

    def spend(self, n: int) -> None:
        if self._tokens is not None:
            self._tokens = max(0.0, self._tokens - n)

    def defer_until(self, now: datetime, n: int) -> datetime:
        """When ``n`` rows deferred now come due: the end of the queue of deferred rows."""
        rate = self._rate()
        start = now if self._horizon is None or self._horizon < now else self._horizon
        self._horizon = start + timedelta(seconds=n / rate if rate > 0 else 0.0)
        return self._horizon
