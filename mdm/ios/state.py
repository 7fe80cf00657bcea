"""Process-local, bounded state that keeps the idle poll cheap.

``QueueHint`` (``core.queue_hint``, re-exported): "device N had nothing to deliver" for a few
seconds, so an idle poll of an empty queue needs no query at all. Other replicas clear it through
PostgreSQL ``NOTIFY`` (queued here, heard in ``notify.py``); without that (SQLite, or a lost
listener connection) a stale hint delays delivery by at most ``ios.queue_hint_seconds``.

Bindings (certificate -> device, ``core.identity.BindingCache``) are dropped at commit by
``core.identity_invalidation``: ``ios_devices`` is declared there as the iOS binding table, with
``NOTIFY mdm_ios_binding, '<device ids>'`` for the other replicas.

``LastSeen``: ``last_seen_at`` is written behind, in one batched statement every few seconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from mdm.core import store_last_seen
from mdm.core.identity_invalidation import watch_bindings
from mdm.core.queue_hint import JITTER as JITTER  # re-exported
from mdm.core.queue_hint import QueueHint as QueueHint  # re-exported
from mdm.core.queue_hint import invalidate_everywhere as invalidate_everywhere  # re-exported
from mdm.core.queue_hint import notify_queued_on
from mdm.core.seen_summary import SeenSummary
from mdm.core.store_identity import notify_devices
from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, Protocol, utcnow
from mdm.ios.tables import IosDevice

NOTIFY_CHANNEL = "mdm_ios_queue"
NOTIFY_KEY = "mdm_ios_notify_devices"
BINDING_CHANNEL = "mdm_ios_binding"

# ``ios_devices`` is the iOS binding table: re-binding or deleting a row (and any status change or
# deletion of an iOS device) drops the cached binding here and, by NOTIFY, on other replicas.
watch_bindings(Protocol.IOS, IosDevice, channel=BINDING_CHANNEL)
# Enqueues written by Core statements (the admin API's single enqueue) NOTIFY this channel too.
notify_queued_on(NOTIFY_CHANNEL)


@event.listens_for(CommandQueueEntry, "after_insert")
def _queued(_mapper: Any, _connection: Any, target: CommandQueueEntry) -> None:
    # This process's hints are cleared by ``core.queue_hint``; the other replicas hear it here.
    session = object_session(target)
    if session is not None:
        session.info.setdefault(NOTIFY_KEY, set()).add(target.device_id)


@event.listens_for(Session, "after_flush")
def _notify_replicas(session: Session, _context: Any) -> None:
    # PostgreSQL: tell other replicas (delivered at commit, dropped on rollback).
    devices = session.info.pop(NOTIFY_KEY, None)
    if devices:
        notify_devices(session.connection(), NOTIFY_CHANNEL, devices)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(NOTIFY_KEY, None)


class LastSeen:
    """device id -> last time seen, flushed in batches (bounded by the devices seen per interval)."""

    def __init__(self) -> None:
        self._pending: dict[int, datetime] = {}
        self.seen = SeenSummary("ios")  # the periodic devices_seen summary
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
    CHUNK = 200

    async def flush(self, db: Database) -> int:
        """Write what is pending, ``CHUNK`` rows per transaction, in id order (the order row locks
        are taken in; neighbours share a page). On SQLite each chunk runs inline (one UPDATE by
        key per row, on the event loop's thread: ~1 ms for 200 rows), so that it holds the write
        queue for its own work only: through aiosqlite's thread it waited for a turn of a busy
        loop at the statement and again at the commit, holding the queue all the while (765 ms
        once for 500 rows at load ~6). On PostgreSQL a chunk is one statement
        (``core.store_last_seen``). The loop runs between two chunks."""
        if not self._pending:
            if self.seen.due():
                await self.seen.report(db)
            return 0
        batch, self._pending = self._pending, {}
        items = sorted(batch.items())
        written = 0
        try:
            for start in range(0, len(items), self.CHUNK):
                chunk = items[start : start + self.CHUNK]
                async with db.transaction(inline=True) as session:
                    await store_last_seen.write(session, chunk)
                written += len(chunk)
                self.seen.add(device_id for device_id, _ in chunk)
                await asyncio.sleep(0)  # the requests waiting for the loop (and the queue) first
        except BaseException:
            # Keep what was not written (newer touches win) and let the caller log/retry.
            for device_id, at in items[written:]:
                self._pending.setdefault(device_id, at)
            raise
        if self.seen.due():
            await self.seen.report(db)
        return written
