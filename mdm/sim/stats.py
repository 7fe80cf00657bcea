"""Latency samples of simulated devices: percentiles and error counts by kind."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (``p`` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Samples:
    """Latencies in seconds plus error counts by kind."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    def add(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    @property
    def count(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        rate = self.count / self.elapsed if self.elapsed > 0 else math.nan
        return {
            "requests": self.count,
            "elapsed_s": round(self.elapsed, 3),
            "per_second": round(rate, 1),
            "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p90_ms": round(percentile(ordered, 90) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else math.nan,
            "errors": dict(self.errors),
        }
