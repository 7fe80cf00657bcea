"""The push worker process's own SQLite write-path metrics (``mdm.db.metrics``: how long its
claims and applies waited for the server's write lock) reach the server's ``/metrics`` as
``mdm_push_worker_db_*``, apart from the server's own ``mdm_db_*`` (the figure that shows
whether the worker starves for the lock while bulk batches run)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from mdm.push.worker_channel import MirroredMetrics, WorkerView, parse, snapshot


def test_the_workers_lock_waits_are_shown_under_a_name_of_their_own() -> None:
    worker = CollectorRegistry()
    waits = Histogram("mdm_db_sqlite_lock_wait_seconds", "lock waits", buckets=(0.01, 1.0), registry=worker)
    waits.observe(0.005)
    waits.observe(0.5)
    snap = parse(snapshot({}, worker))
    assert snap is not None
    view = WorkerView()
    view.take(snap, 0)
    view.take(snap, 1)  # two workers: their counts are summed
    server = CollectorRegistry()
    server.register(MirroredMetrics(view))
    text = generate_latest(server).decode()
    assert 'mdm_push_worker_db_sqlite_lock_wait_seconds_bucket{le="0.01"} 2.0' in text
    assert "mdm_push_worker_db_sqlite_lock_wait_seconds_count 4.0" in text
    assert "\nmdm_db_" not in text  # (the server's own names stay the server's)
