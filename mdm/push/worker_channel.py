"""What the push worker process tells the server, once a second, as one JSON line on its stdout
(``[push] worker = "process"``): its dispatcher's counters (``GET /api/v1/push/status`` and the
``push`` light read ``dispatcher.stats``) and its push metrics (the server's ``/metrics``).

The server adds what earlier worker processes counted before they ended, so that a restarted
worker does not set ``sent`` or the metrics' counters back to zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.registry import Collector

from mdm.push.dispatcher import ServiceStats

PREFIX = "mdm_push_"  # every push metric is the worker's, the owed gauge too (its idle refresh)
# Samples that only grow (counters, histograms): summed over the worker processes.
_GROWING = ("_total", "_count", "_sum", "_bucket")


def snapshot(stats: Mapping[str, ServiceStats], registry: CollectorRegistry) -> bytes:
    """The worker's line: its counters and its push metric families."""
    services = {
        name: {"configured": svc.configured, "circuit_open": svc.circuit_open, "sent": svc.sent,
               "failures": dict(svc.failures),
               "last_success_at": svc.last_success_at.isoformat() if svc.last_success_at else None}
        for name, svc in stats.items()
    }
    families = [
        {"name": f.name, "doc": f.documentation, "type": f.type,
         "samples": [[sample.name, sample.labels, sample.value] for sample in f.samples]}
        for f in registry.collect() if f.name.startswith(PREFIX)
    ]
    return json.dumps({"services": services, "metrics": families}).encode() + b"\n"


def parse(line: bytes) -> dict[str, Any] | None:
    """A snapshot line, or None for anything else the worker may print."""
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) and "services" in found else None


class WorkerView:
    """The server's picture of its worker process: the last snapshot plus what the worker
    processes before it counted."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self._base_services: dict[str, dict[str, Any]] = {}
        self._base_samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._kinds: dict[str, tuple[str, str]] = {}  # family -> (documentation, type)

    def take(self, snap: dict[str, Any]) -> None:
        self.last = snap
        for family in snap.get("metrics", []):
            self._kinds[family["name"]] = (family["doc"], family["type"])

    def worker_ended(self) -> None:
        """The worker process ended: its counts become the base of the next one's."""
        if self.last is None:
            return
        for name, svc in self.last.get("services", {}).items():
            base = self._base_services.setdefault(name, {"sent": 0, "failures": {}})
            base["sent"] += int(svc.get("sent", 0))
            for reason, n in svc.get("failures", {}).items():
                base["failures"][reason] = base["failures"].get(reason, 0) + int(n)
        for family in self.last.get("metrics", []):
            for name, labels, value in family["samples"]:
                if name.endswith(_GROWING):
                    key = (name, tuple(sorted(labels.items())))
                    self._base_samples[key] = self._base_samples.get(key, 0.0) + float(value)
        self.last = None

    def apply(self, stats: dict[str, ServiceStats]) -> None:
        """Write the worker's counters into the server's dispatcher's ``stats`` (read by the API
        and the status light)."""
        services = (self.last or {}).get("services", {})
        for name, current in stats.items():
            svc = services.get(name)
            base = self._base_services.get(name, {"sent": 0, "failures": {}})
            failures = dict(base["failures"])
            if svc is None:
                current.sent, current.failures = base["sent"], failures
                continue
            for reason, n in svc.get("failures", {}).items():
                failures[reason] = failures.get(reason, 0) + int(n)
            current.configured = bool(svc.get("configured"))
            current.circuit_open = bool(svc.get("circuit_open"))
            current.sent = base["sent"] + int(svc.get("sent", 0))
            current.failures = failures
            at = svc.get("last_success_at")
            if at:
                current.last_success_at = datetime.fromisoformat(at)

    def families(self) -> Iterator[Metric]:
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        by_name: dict[str, Metric] = {}
        for family in (self.last or {}).get("metrics", []):
            metric = by_name[family["name"]] = Metric(family["name"], family["doc"], family["type"])
            for name, labels, value in family["samples"]:
                key = (name, tuple(sorted(labels.items())))
                seen.add(key)
                metric.add_sample(name, labels, float(value) + self._base_samples.get(key, 0.0))
        for (name, labels), value in self._base_samples.items():  # counted by a worker that ended
            if (name, labels) in seen:
                continue
            family_name = _family_of(name)
            if family_name not in by_name:
                doc, kind = self._kinds.get(family_name, ("", "untyped"))
                by_name[family_name] = Metric(family_name, doc, kind)
            by_name[family_name].add_sample(name, dict(labels), value)
        yield from by_name.values()


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
        return list(self.view.families())
