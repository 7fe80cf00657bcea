"""Cached "queue empty" hints and bindings set in one pass (a warm-up, a check-in storm) expire
spread over the last quarter of their ttl, so that the fleet's next polls do not all query the
database in the same second (issue 12: the idle-poll tail)."""

from __future__ import annotations

import time

from mdm.core.identity import BindingCache
from mdm.ios.state import QueueHint


def test_queue_hints_set_together_expire_spread_over_the_last_quarter() -> None:
    now = [0.0]
    hint = QueueHint(ttl=100, size=2000, timer=lambda: now[0])
    for device_id in range(1000):
        hint.mark_empty(device_id, hint.generation)

    def still_empty() -> int:
        return sum(hint.known_empty(d) for d in range(1000))

    now[0] = 74.9
    assert still_empty() == 1000  # never shorter than 3/4 of the ttl
    now[0] = 87.5
    assert 200 < still_empty() < 800  # about half gone by the middle of the last quarter
    now[0] = 100.1
    assert still_empty() == 0  # never longer than the ttl


def test_a_disabled_hint_stores_nothing() -> None:
    hint = QueueHint(ttl=0, size=10)
    hint.mark_empty(1, hint.generation)
    assert not hint.known_empty(1)


def test_bindings_cached_together_expire_spread_within_the_ttl() -> None:
    cache = BindingCache(size=2000, ttl=100)
    before = time.monotonic()
    expiries = [cache.put(bytes([i % 256, i // 256]), i, f"udid-{i}", "ok").expires for i in range(1000)]
    after = time.monotonic()
    assert min(expiries) >= before + 75 and max(expiries) <= after + 100
    assert max(expiries) - min(expiries) > 15
