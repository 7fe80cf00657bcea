"""Prometheus metrics of SQLite's write path (registered in ``mdm.core.metrics.REGISTRY`` by that
module: ``mdm.db`` sits below ``mdm.core`` and imports nothing of it).

A write transaction first waits for the in-process write queue (``Database.transaction``), then,
when another process holds SQLite's write lock (the push worker process), in SQLite's busy
handler for at most ``sqlite_driver.BUSY_TIMEOUT_MS``; past that it is refused ("database is
locked"). The three are measured separately so that a wait that approaches the busy timeout shows
before one is refused."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

WRITE_QUEUE_WAIT = Histogram(
    "mdm_db_write_queue_wait_seconds",
    "SQLite: time a write transaction waited for the in-process write queue",
    buckets=_BUCKETS, registry=None,
)
WRITE_QUEUE_HOLD = Histogram(
    "mdm_db_write_queue_hold_seconds",
    "SQLite: time a write transaction held the in-process write queue (its lock wait included)",
    buckets=_BUCKETS, registry=None,
)
LOCK_WAIT = Histogram(
    "mdm_db_sqlite_lock_wait_seconds",
    "SQLite: time a write transaction's BEGIN IMMEDIATE waited for another process's write lock "
    "(refused at the busy timeout)",
    buckets=_BUCKETS, registry=None,
)
LOCK_REFUSED = Counter(
    "mdm_db_sqlite_lock_refused",
    "SQLite: write transactions refused because another process held the write lock for the whole "
    "busy timeout",
    registry=None,
)

ALL = (WRITE_QUEUE_WAIT, WRITE_QUEUE_HOLD, LOCK_WAIT, LOCK_REFUSED)
