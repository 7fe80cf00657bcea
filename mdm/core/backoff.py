"""The pause between failed attempts (event delivery, Exchange cmdlets): exponential with
"decorrelated jitter" (each pause is drawn between the initial pause and three times the previous
one, capped), so that replicas and restarts do not retry in step; a receiver's Retry-After is
honoured as a floor."""

from __future__ import annotations

import random

# A Retry-After beyond this is not believed (a misconfigured receiver must not park us for days).
MAX_RETRY_AFTER = 3600.0


class Backoff:
    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = max(maximum, initial)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._previous = 0.0
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """The pause after one more failure."""
        self.failures += 1
        upper = max(self.initial, self._previous * 3)
        delay = min(self.maximum, self._rng.uniform(self.initial, upper))
        self._previous = delay
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def reset(self) -> None:
        self._previous = 0.0
        self.failures = 0
