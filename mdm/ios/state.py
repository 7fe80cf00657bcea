"""Process-local, bounded state that keeps the idle poll cheap.

``QueueHint``: "device N had nothing to deliver" for a few seconds, so an idle poll of an empty
queue needs no query at all; and "something was just queued for device N", so that its next Idle
poll goes straight to the delivering transaction without a read-only look first. Enqueueing
anywhere in this process clears the device's hint (an ORM ``after_insert`` listener on the queue
table) and bumps a generation counter, so a query that raced with an enqueue never stores a
stale "empty". Other replicas clear it through PostgreSQL ``NOTIFY`` (``notify.py``); without
that (SQLite, or a lost listener connection) a stale hint delays delivery by at most
``ios.queue_hint_seconds``, until the next poll after expiry.

Bindings (certificate -> device, ``core.identity.BindingCache``) are dropped at commit by
``core.identity_invalidation``: ``ios_devices`` is declared there as the iOS binding table, with
``NOTIFY mdm_ios_binding, '<device ids>'`` for the other replicas.

``LastSeen``: ``last_seen_at`` is written behind, in one batched statement every few seconds.
"""

from __future__ import annotations

import random
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cachetools import LRUCache, TLRUCache
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from mdm.core.identity_invalidation import watch_bindings
from mdm.core.store_identity import notify_devices
from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, Protocol, utcnow
from mdm.ios import store
from mdm.ios.tables import IosDevice

# Each "empty" lasts between (1 - JITTER) x ttl and ttl: a fleet whose hints were all set in one
# warm-up pass (or one storm) re-probes over a quarter of the ttl, not all in the same second.
JITTER = 0.25


class QueueHint:
    def __init__(self, ttl: float, size: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self.generation = 0
        # device id -> True while "known empty" (expired entries are dropped by the cache).
        self._empty: TLRUCache[int, bool] = TLRUCache(maxsize=size, ttu=self._expiry, timer=timer)
        self._pending: LRUCache[int, bool] = LRUCache(maxsize=size)
        _HINTS.add(self)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def _expiry(self, _key: int, _value: bool, now: float) -> float:
        return now + max(self.ttl, 0.0) * (1.0 - JITTER * random.random())  # noqa: S311 - not secret

    def known_empty(self, device_id: int) -> bool:
        return device_id in self._empty

    def mark_empty(self, device_id: int, generation: int) -> None:
        """Record an empty queue seen by a query that started at ``generation``."""
        if not self.enabled or generation != self.generation:
            return
        self._empty.pop(device_id, None)  # a fresh expiry and the most recent place
        self._empty[device_id] = True

    def invalidate(self, device_id: int) -> None:
        """Something was queued for the device (or may have been): forget "empty", and remember
        that its next Idle poll should look for work inside a transaction straight away."""
        self.generation += 1
        self._empty.pop(device_id, None)
        self._pending.pop(device_id, None)
        self._pending[device_id] = True

    def take_pending(self, device_id: int) -> bool:
        """True once after ``invalidate`` (bounded: an entry may be dropped, never invented)."""
        return self._pending.pop(device_id, None) is not None

    def clear(self) -> None:
        self.generation += 1
        self._empty.clear()
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._empty)


_HINTS: weakref.WeakSet[QueueHint] = weakref.WeakSet()


def invalidate_everywhere(device_id: int) -> None:
    for hint in list(_HINTS):
        hint.invalidate(device_id)


QUEUED_KEY = "mdm_ios_queued_devices"
NOTIFY_CHANNEL = "mdm_ios_queue"
NOTIFY_KEY = "mdm_ios_notify_devices"
BINDING_CHANNEL = "mdm_ios_binding"

# ``ios_devices`` is the iOS binding table: re-binding or deleting a row (and any status change or
# deletion of an iOS device) drops the cached binding here and, by NOTIFY, on other replicas.
watch_bindings(Protocol.IOS, IosDevice, channel=BINDING_CHANNEL)


@event.listens_for(CommandQueueEntry, "after_insert")
def _queued(_mapper: Any, _connection: Any, target: CommandQueueEntry) -> None:
    # Clear now (this process) and again at commit: a poll that queried between this flush and
    # the commit saw no row, and the commit-time clear removes the "empty" it may have stored.
    invalidate_everywhere(target.device_id)
    session = object_session(target)
    if session is not None:
        session.info.setdefault(QUEUED_KEY, set()).add(target.device_id)
        session.info.setdefault(NOTIFY_KEY, set()).add(target.device_id)


@event.listens_for(Session, "after_flush")
def _notify_replicas(session: Session, _context: Any) -> None:
    # PostgreSQL: tell other replicas (delivered at commit, dropped on rollback).
    devices = session.info.pop(NOTIFY_KEY, None)
    if devices:
        notify_devices(session.connection(), NOTIFY_CHANNEL, devices)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for device_id in session.info.pop(QUEUED_KEY, ()):
        invalidate_everywhere(device_id)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(QUEUED_KEY, None)
    session.info.pop(NOTIFY_KEY, None)


class LastSeen:
    """device id -> last time seen, flushed in batches (bounded by the devices seen per interval)."""

    def __init__(self) -> None:
        self._pending: dict[int, datetime] = {}
        self._now: datetime = utcnow()
        self._now_at = 0.0

    def touch(self, device_id: int) -> None:
        # utcnow() costs more than the rest of this; a 100 ms granularity is plenty.
        mono = time.monotonic()
        if mono - self._now_at > 0.1:
            self._now = utcnow()
            self._now_at = mono
        self._pending[device_id] = self._now

    def __len__(self) -> int:
        return len(self._pending)

    # Rows per transaction: a fleet's worth in one transaction would hold SQLite's write lock
    # (and PostgreSQL row locks) long enough to show in the latency of command round trips.
    CHUNK = 500

    async def flush(self, db: Database) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        items = list(batch.items())
        written = 0
        try:
            for start in range(0, len(items), self.CHUNK):
                chunk = items[start : start + self.CHUNK]
                rows: list[dict[str, Any]] = [{"b_id": device_id, "b_at": at} for device_id, at in chunk]
                async with db.transaction() as session:
                    await store.write_last_seen(session, rows)
                written += len(rows)
        except BaseException:
            # Keep what was not written (newer touches win) and let the caller log/retry.
            for device_id, at in items[written:]:
                self._pending.setdefault(device_id, at)
            raise
        return written
