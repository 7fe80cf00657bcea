"""What the push worker process tells the server, once a second, as one JSON line on its stdout
(``[push] worker = "process"``): its dispatcher's counters (``GET /api/v1/push/status`` and the
``push`` light read ``dispatcher.stats``) and its push metrics (the server's ``/metrics``).

The server sums what its worker processes (``push.workers``) report, and adds what earlier worker
processes counted before they ended, so that a restarted worker does not set ``sent`` or the
metrics' counters back to zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.registry import Collector

from mdm.push.service_stats import ServiceStats

PREFIX = "mdm_push_"  # every push metric is the worker's, the owed gauge too (its idle refresh)
# The server's own gauge: how many of its worker processes run and have reported (their first
# line comes as they start dispatching; ``mdm bench fleet`` waits for all of them).
WORKERS_REPORTING = "mdm_push_worker_processes"
# The worker's own SQLite write-path metrics (``mdm.db.metrics``: its waits for the server's write
# lock above all) are shown by the server under this prefix, apart from the server's own.
DB_PREFIX = "mdm_db_"
WORKER_DB_PREFIX = "mdm_push_worker_db_"
# Samples that only grow (counters, histograms): summed over the worker processes.
_GROWING = ("_total", "_count", "_sum", "_bucket")


def snapshot(stats: Mapping[str, ServiceStats], registry: CollectorRegistry,
             settings: Mapping[str, Any] | None = None) -> bytes:
    """The worker's line: its counters, its push metric families, the hot settings it runs with."""
    services = {
        name: {"configured": svc.configured, "circuit_open": svc.circuit_open, "sent": svc.sent,
               "failures": dict(svc.failures),
               "last_success_at": svc.last_success_at.isoformat() if svc.last_success_at else None}
        for name, svc in stats.items()
    }
    families = [
        {"name": _shown(f.name), "doc": f.documentation, "type": f.type,
         "samples": [[_shown(sample.name), sample.labels, sample.value] for sample in f.samples]}
        for f in registry.collect() if f.name.startswith((PREFIX, DB_PREFIX))
    ]
    line = {"services": services, "metrics": families, "settings": dict(settings or {})}
    return json.dumps(line).encode() + b"\n"


def _shown(name: str) -> str:
    return WORKER_DB_PREFIX + name.removeprefix(DB_PREFIX) if name.startswith(DB_PREFIX) else name


def parse(line: bytes) -> dict[str, Any] | None:
    """A snapshot line, or None for anything else the worker may print."""
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) and "services" in found else None


class WorkerView:
    """The server's picture of its worker processes (``push.workers``): the last snapshot of each
    (by its slot) plus what the worker processes before them counted. Counters are summed over
    the workers; gauges (the owed count every worker refreshes alike) are their largest value."""

    def __init__(self) -> None:
        self.current: dict[int, dict[str, Any]] = {}  # slot -> last snapshot of its running worker
        self._base_services: dict[str, dict[str, Any]] = {}
        self._base_samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._kinds: dict[str, tuple[str, str]] = {}  # family -> (documentation, type)

    def reported(self, slot: int = 0) -> bool:
        return slot in self.current

    def take(self, snap: dict[str, Any], slot: int = 0) -> None:
        self.current[slot] = snap
        for family in snap.get("metrics", []):
            self._kinds[family["name"]] = (family["doc"], family["type"])

    def worker_ended(self, slot: int = 0) -> None:
        """The slot's worker process ended: its counts become part of the base."""
        last = self.current.pop(slot, None)
        if last is None:
            return
        for name, svc in last.get("services", {}).items():
            base = self._base_services.setdefault(name, {"sent": 0, "failures": {}})
            base["sent"] += int(svc.get("sent", 0))
            for reason, n in svc.get("failures", {}).items():
                base["failures"][reason] = base["failures"].get(reason, 0) + int(n)
        for family in last.get("metrics", []):
            for name, labels, value in family["samples"]:
                if name.endswith(_GROWING):
                    key = (name, tuple(sorted(labels.items())))
                    self._base_samples[key] = self._base_samples.get(key, 0.0) + float(value)

    def apply(self, stats: dict[str, ServiceStats]) -> None:
        """Write the workers' counters, summed, into the server's dispatcher's ``stats`` (read by
        the API and the status light)."""
        snaps = [self.current[slot] for slot in sorted(self.current)]
        for name, current in stats.items():
            base = self._base_services.get(name, {"sent": 0, "failures": {}})
            sent, failures = int(base["sent"]), dict(base["failures"])
            seen = [svc for snap in snaps if (svc := snap.get("services", {}).get(name)) is not None]
            for svc in seen:
                sent += int(svc.get("sent", 0))
                for reason, n in svc.get("failures", {}).items():
                    failures[reason] = failures.get(reason, 0) + int(n)
                at = datetime.fromisoformat(svc["last_success_at"]) if svc.get("last_success_at") else None
                if at is not None and (current.last_success_at is None or at > current.last_success_at):
                    current.last_success_at = at
            if seen:
                current.configured = any(bool(svc.get("configured")) for svc in seen)
                current.circuit_open = any(bool(svc.get("circuit_open")) for svc in seen)
            current.sent, current.failures = sent, failures

    def families(self) -> Iterator[Metric]:
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for slot in sorted(self.current):
            for family in self.current[slot].get("metrics", []):
                samples = values.setdefault(family["name"], {})
                for name, labels, value in family["samples"]:
                    key = (name, tuple(sorted(labels.items())))
                    if key not in samples:
                        samples[key] = float(value)
                    elif name.endswith(_GROWING):
                        samples[key] += float(value)
                    else:  # a gauge, a _created time: one value, not a sum
                        samples[key] = max(samples[key], float(value))
        for (name, labels), value in self._base_samples.items():  # counted by workers that ended
            samples = values.setdefault(_family_of(name), {})
            samples[(name, labels)] = samples.get((name, labels), 0.0) + value
        for family_name, samples in values.items():
            doc, kind = self._kinds.get(family_name, ("", "untyped"))
            metric = Metric(family_name, doc, kind)
            for (name, labels), value in samples.items():
                metric.add_sample(name, dict(labels), value)
            yield metric


def _family_of(sample: str) -> str:
    for suffix in _GROWING:
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


class MirroredMetrics(Collector):
    """The worker's push metrics in the server's registry, in place of the server's own (which
    stay at zero there: the server sends nothing)."""

    def __init__(self, view: WorkerView) -> None:
        self.view = view

    def collect(self) -> Iterable[Metric]:
        running = Metric(WORKERS_REPORTING, "push worker processes running that have reported", "gauge")
        running.add_sample(WORKERS_REPORTING, {}, float(len(self.view.current)))
        return [*self.view.families(), running]
