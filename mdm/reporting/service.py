"""The delivery worker: the transactional outbox (``events``) to the core server, through a
``Transport`` (``mdm.reporting.seams``).

One replica delivers at a time (``mdm.db.leader_lock``: an advisory lock on PostgreSQL, a ``flock`` on
SQLite); the others wait and take over as soon as it dies. The holder reads undelivered events in
id order (global id order is per-device order), sends one batch at a time and marks exactly the
rows it sent delivered in one transaction. A crash between the send and the mark sends the batch
again: the receiver de-duplicates by ``uuid``, so every event is delivered once after
de-duplication.

- ``RETRY`` (an outage, a 5xx, a timeout, a TLS failure): the batch is kept and sent again after
  an exponential, jittered pause (``backoff``) or the receiver's Retry-After. It never counts as
  a refusal: an outage only ages events.
- ``REJECTED``: a refusal is counted on the refused events (a wholly refused batch of several is
  split in halves until the culprit is alone); at ``dead_letter_after_attempts`` an event is
  dead-lettered and delivery goes on after it. Nothing after a refused event that is not yet dead
  is delivered, so per-device order among delivered events holds; a dead letter replayed later
  (``service_dead``) arrives after newer events: receivers order by ``created_at`` / ``id``.
- PostgreSQL hands out ids before commit, so a lower id can become visible after a higher one. A
  young event (``settle_seconds``) that follows ids not yet visible is not delivered before them:
  the worker re-reads shortly; a hole older than that is a rolled-back transaction.

While it holds the lock the replica also runs the upkeep (``service_upkeep``: age-based dead
letters, the retention prune, the backlog figures and the link-state row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from cachetools import TTLCache
from sqlalchemy.exc import DBAPIError, OperationalError

from mdm.core import events as core_events
from mdm.core import store_outbox as outbox
from mdm.db.engine import Database
from mdm.db.leader_lock import LeaderLock
from mdm.db.models import utcnow
from mdm.reporting import metrics
from mdm.reporting import store as link_store
from mdm.reporting.backoff import Backoff
from mdm.reporting.config import ReportingConfig
from mdm.reporting.event_types import CORE_LINK_DOWN, CORE_LINK_UP
from mdm.reporting.link import CameUp, LinkMonitor, WentDown
from mdm.reporting.seams import DeviceRecord, OutboundEvent, Outcome, SendResult, Transport
from mdm.reporting.service_upkeep import Upkeep

log = logging.getLogger("mdm.reporting")

LOCK_RETRY_SECONDS = 3.0  # a replica without the lock tries again this often
LOCK_CHECK_SECONDS = 5.0  # the holder checks that its lock's connection is alive this often
SETTLE_SECONDS = 2.0  # a hole before an event younger than this may be a transaction in flight
GAP_RECHECK_SECONDS = 0.05
DEVICE_CACHE_SECONDS = 30.0
DB_RETRY_SECONDS = 5.0
# Beyond this many ids between two events, the gap check looks only at the id just below.
GAP_SPAN = 100_000


class OutboxWorker:
    def __init__(
        self,
        db: Database,
        transport: Transport | None,
        settings: ReportingConfig,
        lock: LeaderLock,
        *,
        deliverer: str,
        settle_seconds: float = SETTLE_SECONDS,
        lock_retry_seconds: float = LOCK_RETRY_SECONDS,
        upkeep: Upkeep | None = None,
    ) -> None:
        self.db = db
        self.transport = transport
        self.settings = settings
        self.lock = lock
        self.settle_seconds = settle_seconds
        self.lock_retry_seconds = lock_retry_seconds
        self.link = LinkMonitor(deliverer, utcnow())
        self.upkeep = upkeep or Upkeep(db, settings, self.link, delivering=transport is not None)
        self.backoff = Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds)
        self.holding = False
        self._wake = asyncio.Event()
        self._cursor: int | None = None  # the highest id delivered while holding the lock
        self._prefetched: list[outbox.PendingEvent] | None = None
        # The mark of the last delivered batch, still running while the next batch is sent.
        self._marking: asyncio.Task[int] | None = None
        # Device records by id (None: no such device any more), for a short while.
        self._devices: TTLCache[int, DeviceRecord | None] = TTLCache(maxsize=50_000, ttl=DEVICE_CACHE_SECONDS)

    def wake(self) -> None:
        """Look for new events now (e.g. after dead letters were put back)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver while this replica holds the lock; wait for it otherwise. Runs until cancelled."""
        while True:
            if not await self.lock.acquire():
                await self._pause(self.lock_retry_seconds)
                continue
            self.holding = True
            metrics.DELIVERER.set(1)
            log.info("this replica delivers the event outbox (transport %s)",
                     self.transport.name if self.transport else "none")
            try:
                await self._hold()
            finally:
                self.holding = False
                metrics.DELIVERER.set(0)
                await asyncio.shield(self.lock.release())
            # The lock was lost (its connection died): the other replicas try first, rather than
            # this one racing them for it at once.
            await asyncio.sleep(self.lock_retry_seconds)

    async def _hold(self) -> None:
        self._cursor, self._prefetched = None, None
        if self.transport is not None:
            async with self.db.session() as session:
                self.link.resume(await link_store.read(session))
        upkeep = asyncio.create_task(self.upkeep.run(), name="worker:reporting.upkeep")
        try:
            next_check = time.monotonic() + LOCK_CHECK_SECONDS
            retry_at = 0.0  # after a failure, not before this (a wake-up does not shorten the backoff)
            while True:
                if time.monotonic() >= next_check:
                    if not await self.lock.still_held():
                        log.warning("the delivery lock's database connection was lost; delivery stops "
                                    "here until this replica takes the lock again")
                        return
                    next_check = time.monotonic() + LOCK_CHECK_SECONDS
                if upkeep.done():
                    upkeep.result()  # the upkeep ends only by failing: let it be seen
                    return
                try:
                    if self.transport is None:
                        pause = self.settings.poll_seconds
                    elif time.monotonic() < retry_at:
                        pause = retry_at - time.monotonic()
                    else:
                        pause = await self.step()
                        if self.backoff.failures:
                            retry_at = time.monotonic() + pause
                except (OSError, DBAPIError, OperationalError) as exc:
                    log.warning("outbox delivery paused: the database failed (%s); trying again in %.0f s",
                                type(exc).__name__, DB_RETRY_SECONDS)
                    pause = DB_RETRY_SECONDS
                if pause > 0:
                    await self._pause(min(pause, max(0.0, next_check - time.monotonic())) or 0.01)
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            with contextlib.suppress(Exception):  # a graceful stop lets the last mark finish
                await self._marked()

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # ---- one round --------------------------------------------------------------------------
    async def step(self) -> float:
        """Read and deliver one batch; answers the pause before the next round (0: go on)."""
        assert self.transport is not None
        size = self.settings.batch_size
        if self._prefetched is None:
            await self._marked()  # a fresh read must not see the rows of a batch being marked
        batch = self._prefetched if self._prefetched is not None else await self._read(0, size)
        self._prefetched = None
        if not batch:
            return self.settings.poll_seconds
        batch = await self._guard(batch)
        if not batch:
            return GAP_RECHECK_SECONDS
        prefetch = (
            asyncio.create_task(self._read(batch[-1].id, size), name="worker:reporting.prefetch")
            if len(batch) == size else None
        )
        try:
            pause = await self._deliver(await self._outbound(batch))
        except BaseException:
            if prefetch is not None:
                prefetch.cancel()
            raise
        if prefetch is not None:
            if pause is None:  # catching up: the mark overlaps the next batch's send
                self._prefetched = await prefetch
                return 0.0
            prefetch.cancel()
        await self._marked()
        return self.settings.poll_seconds if pause is None else pause

    async def _marked(self) -> None:
        """Wait for the mark of the last delivered batch (its failure is raised here)."""
        marking, self._marking = self._marking, None
        if marking is not None:
            await marking

    async def _read(self, after_id: int, limit: int) -> list[outbox.PendingEvent]:
        async with self.db.session() as session:
            return await outbox.pending(session, limit, after_id)

    async def _guard(self, batch: list[outbox.PendingEvent]) -> list[outbox.PendingEvent]:
        """The batch up to the first young event that follows ids not visible yet (PostgreSQL)."""
        if self.db.is_sqlite:  # one writer: ids become visible in their order
            return batch
        young = utcnow() - timedelta(seconds=self.settle_seconds)
        prev = self._cursor
        async with self.db.session() as session:
            for i, event in enumerate(batch):
                if (prev is not None and event.id == prev + 1) or event.created_at < young:
                    prev = event.id
                    continue
                if prev is None or prev >= event.id or event.id - prev > GAP_SPAN:
                    missing = event.id - await outbox.max_id_below(session, event.id) - 1
                else:
                    missing = event.id - prev - 1 - await outbox.count_between(session, prev, event.id)
                if missing > 0:
                    log.debug("outbox: %d id(s) before event %d not visible yet; waiting", missing, event.id)
                    return batch[:i]
                prev = event.id
        return batch

    async def _outbound(self, batch: Sequence[outbox.PendingEvent]) -> list[OutboundEvent]:
        """The batch as it leaves, each event with its device's record (one query for the devices
        not in the short-lived cache)."""
        wanted = {e.device_id for e in batch if e.device_id is not None and e.device_id not in self._devices}
        if wanted:
            async with self.db.session() as session:
                found = await outbox.device_records(session, sorted(wanted))
            for device_id in wanted:
                self._devices[device_id] = None
            for row in found:
                self._devices[row.id] = DeviceRecord(
                    id=row.id, protocol=row.protocol, status=row.status, name=row.name, model=row.model,
                    os_version=row.os_version, serial_number=row.serial_number, udid=row.udid,
                    user=row.user, last_seen_at=row.last_seen_at,
                )  # fmt: skip
        devices = self._devices
        return [
            OutboundEvent(
                id=e.id, uuid=e.uuid, type=e.type, severity=e.severity, created_at=e.created_at,
                body=e.body, device_id=e.device_id, user_id=e.user_id,
                device=devices.get(e.device_id) if e.device_id is not None else None,
            )
            for e in batch
        ]  # fmt: skip

    # ---- sending and what follows -------------------------------------------------------------
    async def _deliver(self, batch: Sequence[OutboundEvent]) -> float | None:
        """Send ``batch``; None when every event of it is dealt with (delivered or dead), else the
        pause before trying again from the first event still waiting."""
        assert self.transport is not None
        try:
            result = await self.transport.send(batch)
        except Exception as exc:  # a transport must not raise; one that does is an outage
            log.exception("transport %s raised instead of answering", self.transport.name)
            result = SendResult(Outcome.RETRY, "transport_error", type(exc).__name__)
        if result.outcome is Outcome.RETRY:
            await self._failed(result, len(batch))
            return self.backoff.next_delay(result.retry_after)
        await self._answered()
        if result.outcome is Outcome.DELIVERED:
            await self._marked()
            self._marking = asyncio.create_task(self._settle(batch, [], ""), name="worker:reporting.mark")
            self.backoff.reset()
            return None
        error = f"{result.reason}: {result.detail}" if result.detail else result.reason
        named = [e for e in batch if e.uuid in result.rejected]
        if named:  # the others were accepted
            accepted = [e for e in batch if e.uuid not in result.rejected]
            dead = await self._settle(accepted, named, error)
        elif len(batch) == 1:
            named, dead = list(batch), await self._settle([], batch, error)
        else:
            half = len(batch) // 2
            pause = await self._deliver(batch[:half])
            return pause if pause is not None else await self._deliver(batch[half:])
        return None if dead == len(named) else self.backoff.next_delay()

    async def _settle(self, delivered: Sequence[OutboundEvent], refused: Sequence[OutboundEvent],
                      error: str) -> int:
        """Mark ``delivered`` and count a refusal on ``refused`` in one transaction; answers how
        many of the refused are now dead."""
        now = utcnow()
        dead = 0
        async with self.db.transaction() as session:
            if delivered:
                await outbox.mark_delivered(session, [e.id for e in delivered], now)
            if refused:
                dead = await outbox.refuse(
                    session, [e.id for e in refused], error, self.settings.dead_letter_after_attempts, now
                )
        if delivered:
            metrics.DELIVERED.inc(len(delivered))
            for event in delivered:
                metrics.LATENCY.observe(max(0.0, (now - event.created_at).total_seconds()))
            top = delivered[-1].id
            self._cursor = top if self._cursor is None else max(self._cursor, top)
        if refused:
            metrics.REFUSED.inc(len(refused))
            if dead:
                metrics.DEAD_LETTERED.labels("refused").inc(dead)
            log.warning("core server refused %d event(s) (%s): %s; %d dead-lettered", len(refused),
                        ", ".join(f"{e.id}:{e.type}" for e in refused[:5]), error, dead)
        return dead

    async def _failed(self, result: SendResult, size: int) -> None:
        metrics.FAILURES.labels(result.reason).inc()
        went = self.link.on_failure(result.reason, result.detail, utcnow())
        log.log(logging.WARNING if went or self.link.failures == 1 else logging.INFO,
                "core server: %d event(s) not delivered (%s%s); attempt %d, retrying", size, result.reason,
                f": {result.detail}" if result.detail else "", self.link.failures)
        if went is not None:
            await self._transition(went)

    async def _answered(self) -> None:
        came = self.link.on_success(utcnow())
        if came is not None:
            await self._transition(came)

    async def _transition(self, change: WentDown | CameUp) -> None:
        """The link changed state: its row and the event that reports it, in one transaction."""
        name = self.transport.name if self.transport else "none"
        metrics.LINK_UP.set(1 if isinstance(change, CameUp) else 0)
        async with self.db.transaction() as session:
            if isinstance(change, WentDown):
                log.error("core link down since %s after %d attempts: %s %s", change.since.isoformat(),
                          change.attempts, change.reason, change.detail)
                core_events.emit(session, CORE_LINK_DOWN, reason=change.reason, detail=change.detail[:500],
                                 since=change.since.isoformat(), attempts=change.attempts, transport=name)
            else:
                log.warning("core link up again after %.0f s (%d failed attempts)", change.down_seconds,
                            change.attempts)
                core_events.emit(session, CORE_LINK_UP, down_since=change.down_since.isoformat(),
                                 down_seconds=round(change.down_seconds, 3), attempts=change.attempts,
                                 transport=name)
            await link_store.write(session, self.link.snapshot(utcnow()))


def age_seconds(created_at: datetime | None, now: datetime) -> float:
    return 0.0 if created_at is None else max(0.0, (now - created_at).total_seconds())
