"""What ``mdm bench outbox`` measures while the backlog drains, and what it checks afterwards:
samples of (time, events received, server CPU, server RSS); the steady-state rate between 10 %
and 90 % received; and the receiver's record read back (unique and duplicate events, per-device
order of first receipt, batch round trips from the per-request timings)."""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdm.bench import store_outbox_bench as store
from mdm.bench.outbox_receiver import RecordTail, records
from mdm.bench.stats import MEMORY_KEYS, cpu_seconds, rss_kib
from mdm.db.engine import Database
from mdm.sim.stats import percentile


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the server was started
    received: int  # events recorded by the receiver (duplicates included)
    cpu: float | None  # the server's CPU seconds so far
    rss_kib: int
    anon_kib: int
    receiver_cpu: float | None = None  # the receiver's CPU seconds so far


class Sampler:
    def __init__(self, record: Path, receiver_pid: int | None = None) -> None:
        self.tail = RecordTail(record)
        self.receiver_pid = receiver_pid
        self.samples: list[Sample] = []

    def sample(self, t0: float, pid: int | None) -> Sample:
        received = self.tail.poll()
        cpu = cpu_seconds(pid) if pid else None
        memory = rss_kib(pid, MEMORY_KEYS) if pid else {}
        receiver = cpu_seconds(self.receiver_pid) if self.receiver_pid else None
        s = Sample(time.monotonic() - t0, received, cpu, memory.get("VmRSS", 0), memory.get("RssAnon", 0),
                   receiver)
        self.samples.append(s)
        return s


def steady(samples: list[Sample], events: int) -> tuple[float, float]:
    """(events/s, server CPU seconds per event) between the samples where 10 % and 90 % of the
    events had been received (nan when too few samples)."""
    low = next((s for s in samples if s.received >= events * 0.1), None)
    high = next((s for s in samples if s.received >= events * 0.9), None)
    if low is None or high is None or high.t <= low.t:
        return math.nan, math.nan
    rate = (high.received - low.received) / (high.t - low.t)
    if low.cpu is None or high.cpu is None or high.received == low.received:
        return rate, math.nan
    return rate, (high.cpu - low.cpu) / (high.received - low.received)


async def undelivered(database_url: str) -> int:
    db = Database(database_url, 1)
    try:
        async with db.session() as session:
            return await store.undelivered(session)
    finally:
        await db.close()


@dataclass
class Checked:
    """The receiver's record read back."""

    lines: int = 0
    unique: int = 0
    duplicates: int = 0
    order_kept: bool = True
    out_of_order: list[str] = field(default_factory=list)  # the first few, for the report

    def summary(self) -> dict[str, Any]:
        return {"lines": self.lines, "unique": self.unique, "duplicates": self.duplicates,
                "order_kept": self.order_kept, "out_of_order": self.out_of_order[:5]}


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {}
    return {"p50_ms": round(percentile(values, 50) * 1000, 2),
            "p99_ms": round(percentile(values, 99) * 1000, 2), "max_ms": round(values[-1] * 1000, 2)}


def round_trips(requests: list[tuple[float, float, int]]) -> dict[str, Any]:
    """From the receiver's per-request timings: the batch cycle (gap between the arrivals of
    consecutive batches, the sender's whole round trip: send, answer, mark, next read) and the
    receiver's own share (request to answer)."""
    arrivals = [a for a, _, _ in requests]
    cycles = [b - a for a, b in itertools.pairwise(arrivals)]
    statuses: dict[str, int] = defaultdict(int)
    for _, _, status in requests:
        statuses[str(status)] += 1
    return {"batches": len(requests), **_ms(cycles), "receiver": _ms([h for _, h, _ in requests]),
            "statuses": dict(statuses), "source": "receiver: gap between batch arrivals"}


def verify(record: Path) -> Checked:
    """Unique events, duplicates, and per device: the first receipts in ``created_at`` order (the
    backlog's ``created_at`` rises with the event id)."""
    checked = Checked()
    seen: set[str] = set()
    last: dict[Any, str] = defaultdict(str)
    for event in records(record):
        checked.lines += 1
        uuid = str(event["uuid"])
        if uuid in seen:
            checked.duplicates += 1
            continue
        seen.add(uuid)
        device, created = event.get("device_id"), str(event.get("created_at", ""))
        if device is not None:
            if created < last[device]:
                checked.order_kept = False
                if len(checked.out_of_order) < 5:
                    checked.out_of_order.append(f"device {device}: {created} after {last[device]}")
            last[device] = max(last[device], created)
    checked.unique = len(seen)
    return checked
