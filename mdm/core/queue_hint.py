"""The queue-empty hint of the device channels' idle polls (iOS, KES): process-local, bounded.

``QueueHint``: "device N had nothing to deliver" for a few seconds, so that an idle poll of an
empty queue needs no query at all; and "something was just queued for device N", so that its next
poll goes straight to the delivering transaction. Enqueueing anywhere in this process clears the
device's hint in every ``QueueHint`` (an ORM ``after_insert`` listener on the queue table, again
at commit) and is remembered with a generation (``RecentDrops``), so a query that raced with an
enqueue for its device never stores a stale "empty" (an enqueue for another device does not keep
it out). Other replicas are told by each platform (PostgreSQL ``NOTIFY``); set-based
enqueues (bulk) wake the devices, and the platforms' pushers clear the hint. Without a
notification a stale hint delays delivery by at most its time to live.
"""

from __future__ import annotations

import random
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from mdm.core.recent_drops import RecentDrops
from mdm.db.models import CommandQueueEntry

# Each "empty" lasts between (1 - JITTER) x ttl and ttl: a fleet whose hints were all set in one
# warm-up pass (or one storm) re-probes over a quarter of the ttl, not all in the same second.
JITTER = 0.25


class QueueHint:
    def __init__(self, ttl: float, size: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self._timer = timer
        self._drops = RecentDrops()
        # device id -> when its "known empty" expires, oldest mark first. Bounded: a mark beyond
        # ``size`` forgets the oldest; an expired entry is dropped when it is read or when it is
        # the oldest at a mark. (cachetools' TLRUCache cost ~17-20 µs per mark; a plain dict's
        # first key is found by scanning the holes its deletions left, O(size) once it is full:
        # an OrderedDict's is its list's head.)
        self._empty: OrderedDict[int, float] = OrderedDict()
        self._pending: LRUCache[int, bool] = LRUCache(maxsize=size)
        _HINTS.add(self)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def _expiry(self, now: float) -> float:
        return now + self.ttl * (1.0 - JITTER * random.random())  # noqa: S311 - not secret

    @property
    def generation(self) -> int:
        """Read before the query whose "empty" is then given to ``mark_empty``."""
        return self._drops.generation

    def known_empty(self, device_id: int) -> bool:
        expiry = self._empty.get(device_id)
        if expiry is None:
            return False
        if expiry > self._timer():
            return True
        del self._empty[device_id]
        return False

    def mark_empty(self, device_id: int, generation: int) -> None:
        """Record an empty queue seen by a query that started at ``generation``."""
        if not self.enabled or self._drops.since(generation, device_id):
            return
        empty = self._empty
        now = self._timer()
        empty[device_id] = self._expiry(now)
        empty.move_to_end(device_id)  # a fresh expiry and the most recent place
        oldest = next(iter(empty))
        if len(empty) > self.size or empty[oldest] <= now:
            del empty[oldest]

    def invalidate(self, device_id: int) -> None:
        """Something was queued for the device (or may have been): forget "empty", and remember
        that its next Idle poll should look for work inside a transaction straight away."""
        self._drops.drop(device_id)
        self._empty.pop(device_id, None)
        self._pending.pop(device_id, None)
        self._pending[device_id] = True

    def take_pending(self, device_id: int) -> bool:
        """True once after ``invalidate`` (bounded: an entry may be dropped, never invented)."""
        return self._pending.pop(device_id, None) is not None

    def clear(self) -> None:
        self._drops.clear()
        self._empty.clear()
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._empty)


_HINTS: weakref.WeakSet[QueueHint] = weakref.WeakSet()


def invalidate_everywhere(device_id: int) -> None:
    for hint in list(_HINTS):
        hint.invalidate(device_id)


# PostgreSQL channels told ``NOTIFY channel, '<device id>'`` of every queued device: each is a
# platform's (its listener clears the hint on the other replicas, ``mdm.ios.notify``). A platform
# names its channel here once (``notify_queued_on``) for enqueues written by Core statements, which
# no ORM listener sees (``mdm.core.store_enqueue``); its ORM listener covers the others.
_CHANNELS: list[str] = []


def notify_queued_on(channel: str) -> None:
    if channel not in _CHANNELS:
        _CHANNELS.append(channel)


def queued_channels() -> tuple[str, ...]:
    return tuple(_CHANNELS)


QUEUED_KEY = "mdm_queued_devices"


@event.listens_for(CommandQueueEntry, "after_insert")
def _queued(_mapper: Any, _connection: Any, target: CommandQueueEntry) -> None:
    # Clear now (this process) and again at commit: a poll that queried between this flush and
    # the commit saw no row, and the commit-time clear removes the "empty" it may have stored.
    invalidate_everywhere(target.device_id)
    session = object_session(target)
    if session is not None:
        session.info.setdefault(QUEUED_KEY, set()).add(target.device_id)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for device_id in session.info.pop(QUEUED_KEY, ()):
        invalidate_everywhere(device_id)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(QUEUED_KEY, None)
