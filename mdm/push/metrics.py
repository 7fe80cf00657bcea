"""Prometheus metrics of the push services, in the process registry (``/metrics``).

``reason`` labels come from the transports' classification (APNs and FCM reasons, ``timeout``,
...); a server answering garbage cannot grow the label set without bound: past
``MAX_REASONS`` distinct reasons per service the rest are counted as ``other``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from mdm.core.metrics import REGISTRY

MAX_REASONS = 32

SENT = Counter("mdm_push_sent_total", "Wake-up pushes the push service accepted", ["service"],
               registry=REGISTRY)
FAILED = Counter("mdm_push_failed_total", "Wake-up pushes not accepted, by the service's reason",
                 ["service", "reason"], registry=REGISTRY)
_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
LATENCY = Histogram(
    "mdm_push_latency_seconds", "Time to send one wake-up push and read the answer", ["service"],
    buckets=_BOUNDS, registry=REGISTRY,
)


# The per-service children, looked up once (``labels()`` costs microseconds on every push).
@cache
def sent(service: str) -> Any:
    return SENT.labels(service)


@cache
def latency(service: str) -> Any:
    return LATENCY.labels(service)


class Latencies:
    """The send latencies of a batch's pushes, per service, put into ``LATENCY`` once per batch:
    the same buckets and sum as an ``observe`` per push (``tests/test_push_dispatch_metrics.py``
    compares them), without its lock and bucket walk on every push."""

    __slots__ = ("_by",)

    def __init__(self) -> None:
        self._by: dict[str, tuple[list[int], list[float]]] = {}

    def add(self, service: str, seconds: float) -> None:
        found = self._by.get(service)
        if found is None:
            found = self._by[service] = ([0] * len(_BOUNDS), [0.0])
        found[0][bisect_left(_BOUNDS, seconds)] += 1
        found[1][0] += seconds

    def flush(self) -> None:
        for service, (counts, total) in self._by.items():
            observe_counts(latency(service), counts, total[0])
        self._by.clear()


def observe_counts(child: Any, counts: list[int], total: float) -> None:
    """Add ``counts`` observations per bucket (``_BOUNDS``, +Inf last) summing to ``total`` to a
    histogram child, as that many ``observe`` calls would (prometheus_client 0.26's fields: a
    non-cumulative count per bucket and the sum). Without them (another prometheus_client), one
    ``observe`` per observation at its bucket's bound: the buckets exact, the sum approximate."""
    buckets, summed = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    if buckets is not None and summed is not None and len(buckets) == len(counts):
        summed.inc(total)
        for bucket, n in zip(buckets, counts, strict=True):
            if n:
                bucket.inc(n)
        return
    for bound, n in zip(_BOUNDS, counts, strict=True):
        for _ in range(n):
            child.observe(bound if bound != math.inf else 2 * _BOUNDS[-2])


DEFERRED = Counter("mdm_push_deferred_total", "Background wake-ups (re-pushes, the sweep's) deferred by "
                   "push.repush_per_second", registry=REGISTRY)
OWED = Gauge("mdm_push_owed", "Wake-up pushes owed to devices (persisted, not yet done)", registry=REGISTRY)


class ReasonLabels:
    """Bounded label values per service."""

    def __init__(self, limit: int = MAX_REASONS) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}

    def __call__(self, service: str, reason: str) -> str:
        reason = reason[:64] or "unknown"
        seen = self._seen.setdefault(service, set())
        if reason in seen:
            return reason
        if len(seen) >= self.limit:
            return "other"
        seen.add(reason)
        return reason
