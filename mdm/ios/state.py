"""Process-local, bounded state that keeps the idle poll cheap.

``QueueHint``: "device N had nothing to deliver" for a few seconds, so an idle poll of an empty
queue needs no query at all; and "something was just queued for device N", so that its next Idle
poll goes straight to the delivering transaction without a read-only look first. Enqueueing
anywhere in this process clears the device's hint (an ORM ``after_insert`` listener on the queue
table) and bumps a generation counter, so a query that raced with an enqueue never stores a
stale "empty". Other replicas clear it through PostgreSQL ``NOTIFY`` (``notify.py``); without
that (SQLite, or a lost listener connection) a stale hint delays delivery by at most
``ios.queue_hint_seconds``, until the next poll after expiry.

Bindings (certificate -> device, ``identity.BindingCache``): a transaction that deletes a device,
changes its status (checked out, removed, wiped, ...) or re-binds or deletes its ``ios_devices``
row drops the device's cached binding at commit in this process, and on PostgreSQL sends
``NOTIFY mdm_ios_binding, '<device ids>'`` so that every other replica drops it as well.

``LastSeen``: ``last_seen_at`` is written behind, in one batched statement every few seconds.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, inspect, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, object_session

from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, Device, utcnow
from mdm.ios.identity import BindingCache
from mdm.ios.tables import IosDevice


class QueueHint:
    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self.generation = 0
        self._empty: OrderedDict[int, float] = OrderedDict()
        self._pending: OrderedDict[int, None] = OrderedDict()
        _HINTS.add(self)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def known_empty(self, device_id: int) -> bool:
        until = self._empty.get(device_id)
        if until is None:
            return False
        if until < time.monotonic():
            del self._empty[device_id]
            return False
        return True

    def mark_empty(self, device_id: int, generation: int) -> None:
        """Record an empty queue seen by a query that started at ``generation``."""
        if not self.enabled or generation != self.generation:
            return
        self._empty[device_id] = time.monotonic() + self.ttl
        self._empty.move_to_end(device_id)
        if len(self._empty) > self.size:
            self._empty.popitem(last=False)

    def invalidate(self, device_id: int) -> None:
        """Something was queued for the device (or may have been): forget "empty", and remember
        that its next Idle poll should look for work inside a transaction straight away."""
        self.generation += 1
        self._empty.pop(device_id, None)
        self._pending[device_id] = None
        self._pending.move_to_end(device_id)
        if len(self._pending) > self.size:
            self._pending.popitem(last=False)

    def take_pending(self, device_id: int) -> bool:
        """True once after ``invalidate`` (bounded: an entry may be dropped, never invented)."""
        try:
            del self._pending[device_id]
        except KeyError:
            return False
        return True

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
NOTIFY_STMT = text("SELECT pg_notify(:channel, :payload)")
NOTIFY_KEY = "mdm_ios_notify_devices"


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
    if not devices:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    for chunk in _chunks([str(d) for d in sorted(devices)], 7000):  # payloads must stay < 8000 bytes
        connection.execute(NOTIFY_STMT, {"channel": NOTIFY_CHANNEL, "payload": chunk})


def _chunks(items: list[str], size: int) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    length = 0
    for item in items:
        if current and length + len(item) + 1 > size:
            out.append(",".join(current))
            current, length = [], 0
        current.append(item)
        length += len(item) + 1
    if current:
        out.append(",".join(current))
    return out


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for device_id in session.info.pop(QUEUED_KEY, ()):
        invalidate_everywhere(device_id)
    ended = session.info.pop(BINDING_KEY, None)
    if ended:
        drop_bindings(session.bind, ended)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(QUEUED_KEY, None)
    session.info.pop(NOTIFY_KEY, None)
    session.info.pop(BINDING_KEY, None)
    session.info.pop(BINDING_NOTIFY_KEY, None)


# ---- bindings ---------------------------------------------------------------------------------

BINDING_CHANNEL = "mdm_ios_binding"
BINDING_KEY = "mdm_ios_binding_devices"  # dropped in this process at commit
BINDING_NOTIFY_KEY = "mdm_ios_binding_notify"  # sent to the other replicas at flush

# The binding caches of each engine (one per server in a process; tests run two "replicas" in one
# process, and a commit on one must not reach the other except through NOTIFY).
_BINDING_CACHES: weakref.WeakKeyDictionary[Engine, weakref.WeakSet[BindingCache]] = (
    weakref.WeakKeyDictionary()
)


def track_bindings(engine: Engine, cache: BindingCache) -> None:
    """Drop ``cache``'s entries for devices whose binding a transaction on ``engine`` ended."""
    _BINDING_CACHES.setdefault(engine, weakref.WeakSet()).add(cache)


def drop_bindings(bind: Engine | Connection | None, device_ids: set[int]) -> None:
    engine = bind.engine if isinstance(bind, Connection) else bind
    if engine is None:
        return
    for cache in list(_BINDING_CACHES.get(engine, ())):
        for device_id in device_ids:
            cache.drop_device(device_id)


def _binding_changed(target: Any, device_id: int) -> None:
    session = object_session(target)
    if session is not None:
        session.info.setdefault(BINDING_KEY, set()).add(device_id)
        session.info.setdefault(BINDING_NOTIFY_KEY, set()).add(device_id)


@event.listens_for(Device, "after_update")
def _device_updated(_mapper: Any, _connection: Any, target: Device) -> None:
    if inspect(target).attrs.status.history.has_changes():
        _binding_changed(target, target.id)


@event.listens_for(Device, "after_delete")
def _device_deleted(_mapper: Any, _connection: Any, target: Device) -> None:
    _binding_changed(target, target.id)


@event.listens_for(IosDevice, "after_update")
def _rebound(_mapper: Any, _connection: Any, target: IosDevice) -> None:
    if inspect(target).attrs.cert_fingerprint.history.has_changes():
        _binding_changed(target, target.device_id)


@event.listens_for(IosDevice, "after_delete")
def _unbound(_mapper: Any, _connection: Any, target: IosDevice) -> None:
    _binding_changed(target, target.device_id)


@event.listens_for(Session, "after_flush")
def _notify_binding_replicas(session: Session, _context: Any) -> None:
    devices = session.info.pop(BINDING_NOTIFY_KEY, None)
    if not devices:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    for chunk in _chunks([str(d) for d in sorted(devices)], 7000):
        connection.execute(NOTIFY_STMT, {"channel": BINDING_CHANNEL, "payload": chunk})


class LastSeen:
    """device id -> last time seen, flushed in batches (bounded by the devices seen per interval)."""

    _STMT = update(Device).where(Device.id == bindparam("b_id")).values(last_seen_at=bindparam("b_at"))

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
                rows = [{"b_id": device_id, "b_at": at} for device_id, at in chunk]
                async with db.transaction() as session:
                    connection = await session.connection()
                    await connection.execute(self._STMT, rows)  # Core executemany, not ORM bulk
                written += len(rows)
        except BaseException:
            # Keep what was not written (newer touches win) and let the caller log/retry.
            for device_id, at in items[written:]:
                self._pending.setdefault(device_id, at)
            raise
        return written
