"""Google's FCM rate limits, kept on our side: the project quota (messages per minute) and the
per-device limit (240 messages per minute).

Both are token buckets sized so that no 60-second window exceeds the limit: a burst of a quarter
of it, refilled at the rest over the minute (burst + 60 s * rate = limit). The project limiter
makes senders wait (each reserves its slot and sleeps once, no polling); the device limiter
refuses instead (the dispatcher retries that device later), and keeps a bounded number of
buckets (an LRU/TTL cache keyed by token, refreshed on use).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cachetools import TTLCache


class TokenBucket:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = max(1.0, per_minute / 4)
        self.rate = max(per_minute - self.capacity, 1.0) / 60.0  # tokens per second
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def try_take(self) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is available (not taken)."""
        if self._refill() >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def reserve(self) -> float:
        """Take one token now, going into debt if need be: the seconds to wait before using it.
        Reservations queue up in order, so concurrent waiters each sleep once."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate


class ProjectLimiter:
    """The project's messages per minute: ``acquire`` waits for a slot."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._bucket = TokenBucket(per_minute, clock)
        self.waits = 0

    async def acquire(self) -> None:
        delay = self._bucket.reserve()
        if delay > 0:
            self.waits += 1
            await asyncio.sleep(delay)


class DeviceLimiter:
    """Messages per minute to one registration token; ``check`` answers None (go) or the seconds
    after which that device may be pushed again."""

    def __init__(self, per_minute: int, *, max_devices: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        # An idle bucket refills fully within a minute, so forgetting it after two is harmless.
        self._buckets: TTLCache[str, TokenBucket] = TTLCache(maxsize=max_devices, ttl=120.0,
                                                             timer=clock)

    def check(self, token: str) -> float | None:
        bucket = self._buckets.get(token)
        if bucket is None:
            bucket = TokenBucket(self._per_minute, self._clock)
        self._buckets[token] = bucket  # (re)set: the entry's TTL runs from its last use
        wait = bucket.try_take()
        return None if wait == 0.0 else wait

    def __len__(self) -> int:
        return len(self._buckets)
