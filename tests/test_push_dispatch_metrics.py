"""The dispatcher's per-push bookkeeping, batched (issue 12): the send latencies go into the
histogram once per batch with the same buckets and sum as one ``observe`` per push, and a
client's ``TransportStats`` count what they counted before."""

from __future__ import annotations

import random
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Histogram
from push_dispatch_support import SENT, ScriptedTransport, add_device

from mdm.core.metrics import REGISTRY
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push import metrics
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.stats import TransportStats
from mdm.push.types import Outcome, PushResult


def _samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in histogram.collect() for s in family.samples
            if not s.name.endswith("_created")]


def test_batched_latencies_are_the_histogram_of_one_observe_per_push() -> None:
    rng = random.Random(12)
    values = [rng.choice([0.0, 0.005, 0.01, 10.0, 11.0]) if i % 7 == 0 else rng.expovariate(20)
              for i in range(5000)]
    one_by_one = Histogram("l", "d", ["service"], buckets=metrics._BOUNDS, registry=CollectorRegistry())
    batched = Histogram("l", "d", ["service"], buckets=metrics._BOUNDS, registry=CollectorRegistry())
    for value in values:
        one_by_one.labels("apns").observe(value)
    for chunk in range(0, len(values), 1000):  # batch by batch
        counts = [0] * len(metrics._BOUNDS)
        for value in values[chunk:chunk + 1000]:
            counts[bisect_left(metrics._BOUNDS, value)] += 1
        metrics.observe_counts(batched.labels("apns"), counts, sum(values[chunk:chunk + 1000]))
    expected, found = _samples(one_by_one), _samples(batched)
    assert [(n, labels) for n, labels, _ in found] == [(n, labels) for n, labels, _ in expected]
    for (_, _, want), (_, _, got) in zip(expected, found, strict=True):
        assert abs(want - got) < 1e-9


async def test_each_push_of_a_batch_is_one_latency_observation(db: Database) -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("mdm_push_latency_seconds_count", {"service": "apns"}) or 0.0

    before = count()
    transport = ScriptedTransport()
    transport.answer("t3", PushResult(Outcome.RETRY, reason="throttled", status=429))
    dispatcher = PushDispatcher(db, PushConfig(batch_size=100, concurrency=4), {Protocol.IOS: transport})
    ids = [await add_device(db, f"d{i}", token=f"t{i}") for i in range(25)]
    await dispatcher.wake_many(ids, "command")
    assert await dispatcher.dispatch_once() == 25
    assert count() - before == 25  # answered pushes, accepted or not, each observed once
    assert dispatcher.stats["apns"].sent == 24 and dispatcher.stats["apns"].failures == {"throttled": 1}


def test_transport_stats_count_outcomes_reasons_and_the_last_success() -> None:
    stats = TransportStats()
    assert stats.by_outcome == {} and stats.last_success is None
    stats.record(SENT)
    stats.record(PushResult(Outcome.RETRY, reason="timeout"))
    stats.record(SENT)
    stats.record(PushResult(Outcome.UNAVAILABLE))
    assert stats.sent == 2 and stats.by_outcome == {"sent": 2, "retry": 1, "unavailable": 1}
    assert stats.failed == {"timeout": 1, "unavailable": 1} and stats.last_failure == "unavailable"
    assert stats.last_success is not None and stats.last_success.tzinfo is not None
