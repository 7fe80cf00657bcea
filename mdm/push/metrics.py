"""Prometheus metrics of the push services, in the process registry (``/metrics``).

``reason`` labels come from the transports' classification (APNs and FCM reasons, ``timeout``,
...); a server answering garbage cannot grow the label set without bound: past
``MAX_REASONS`` distinct reasons per service the rest are counted as ``other``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from mdm.core.metrics import REGISTRY

MAX_REASONS = 32

SENT = Counter("mdm_push_sent_total", "Wake-up pushes the push service accepted", ["service"],
               registry=REGISTRY)
FAILED = Counter("mdm_push_failed_total", "Wake-up pushes not accepted, by the service's reason",
                 ["service", "reason"], registry=REGISTRY)
LATENCY = Histogram(
    "mdm_push_latency_seconds", "Time to send one wake-up push and read the answer", ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY,
)


# The per-service children, looked up once (``labels()`` costs microseconds on every push).
@cache
def sent(service: str) -> Any:
    return SENT.labels(service)


@cache
def latency(service: str) -> Any:
    return LATENCY.labels(service)


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
