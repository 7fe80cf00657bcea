"""Process-local, bounded state that keeps an idle sync free of database work.

- ``QueueHint``: "device N had no queued command" for a while; cleared by every enqueue in this
  process (an ORM ``after_insert`` listener on the queue table, again at commit), by a wake-up of
  the device (the KES pusher, ``wakeups.py``) and, on the other replicas, by the wake-up's
  ``NOTIFY``. A generation counter keeps a query that raced with an enqueue from storing a stale
  "empty". Without a notification (a lost listener connection) a stale hint delays delivery by
  at most its time to live.
- ``StateCache``: each device's agent state (group, sync interval, renewal requested, policy
  versions), read once and kept for ``ttl`` seconds; dropped when a sync of this process writes it.
- ``Replies``: the last request id, body hash and answer per device, so that a repeated request
  is answered the same without the database (the database copy covers what changed state).
- ``Spacing``: the last sync time per device, for the ``sync_too_frequent`` refusal (memory only).
- ``LastSync``: ``last_seen_at`` / ``last_sync_at`` written behind, in batches.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cachetools import LRUCache, TLRUCache

from mdm.core.queue_hint import JITTER
from mdm.core.queue_hint import QueueHint as QueueHint  # re-exported
from mdm.core.seen_summary import SeenSummary
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.kes import store_sync


class StateCache:
    """Entries last between (1 - JITTER) x ttl and ttl: states read in one warm-up pass (or one
    storm) are read again over a quarter of the ttl, not all in the same second."""

    def __init__(self, ttl: float, size: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._cache: TLRUCache[int, dict[str, Any]] = TLRUCache(maxsize=size, ttu=self._expiry, timer=timer)
        self.enabled = ttl > 0

    def _expiry(self, _key: int, _value: dict[str, Any], now: float) -> float:
        return now + max(self.ttl, 0.0) * (1.0 - JITTER * random.random())  # noqa: S311 - not secret

    def get(self, device_id: int) -> dict[str, Any] | None:
        return self._cache.get(device_id) if self.enabled else None

    def put(self, device_id: int, state: dict[str, Any]) -> None:
        if self.enabled:
            self._cache[device_id] = state

    def drop(self, device_id: int) -> None:
        self._cache.pop(device_id, None)


class Replies:
    """device id -> (request id, body hash, answer) of its last answered sync."""

    def __init__(self, size: int) -> None:
        self._last: LRUCache[int, tuple[str, bytes, dict[str, Any]]] = LRUCache(maxsize=size)

    def get(self, device_id: int) -> tuple[str, bytes, dict[str, Any]] | None:
        return self._last.get(device_id)

    def put(self, device_id: int, request_id: str, body_hash: bytes, answer: dict[str, Any]) -> None:
        self._last[device_id] = (request_id, body_hash, answer)


class Spacing:
    """A device syncing again within ``min_seconds`` is refused (how long it must wait)."""

    def __init__(self, size: int, timer: Callable[[], float] = time.monotonic) -> None:
        self._last: LRUCache[int, float] = LRUCache(maxsize=size)
        self._timer = timer

    def check(self, device_id: int, min_seconds: float) -> float:
        """0.0 and the sync is recorded, or the seconds left to wait (nothing recorded)."""
        now = self._timer()
        last = self._last.get(device_id)
        if last is not None and min_seconds > 0 and now - last < min_seconds:
            return min_seconds - (now - last)
        self._last[device_id] = now
        return 0.0


class LastSync:
    """device id -> last sync time, flushed in batches (bounded by the devices per interval)."""

    # Rows per transaction; on SQLite each chunk runs inline (two UPDATEs, one per table, on the
    # event loop's thread), holding the write queue for its own work only, never across a turn of
    # a busy loop (``mdm.ios.state.LastSeen``, which measured it).
    CHUNK = 200

    def __init__(self) -> None:
        self._pending: dict[int, datetime] = {}
        self.seen = SeenSummary("kes")  # the periodic devices_seen summary
        self._now = utcnow()
        self._now_at = 0.0

    def touch(self, device_id: int) -> None:
        mono = time.monotonic()
        if mono - self._now_at > 0.1:
            self._now, self._now_at = utcnow(), mono
        self._pending[device_id] = self._now

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, db: Database) -> int:
        if not self._pending:
            if self.seen.due():
                await self.seen.report(db)
            return 0
        batch, self._pending = self._pending, {}
        items = list(batch.items())
        written = 0
        try:
            for start in range(0, len(items), self.CHUNK):
                rows = items[start : start + self.CHUNK]
                async with db.transaction(inline=True) as session:
                    await store_sync.write_last_sync(session, rows)
                written += len(rows)
                self.seen.add(i for i, _ in items[start : start + self.CHUNK])
                await asyncio.sleep(0)  # the requests waiting for the loop (and the queue) first
        except BaseException:
            for device_id, at in items[written:]:
                self._pending.setdefault(device_id, at)
            raise
        if self.seen.due():
            await self.seen.report(db)
        return written
