"""The push dispatcher (DESIGN §6): wake-ups owed to devices, persisted, coalesced, sent, retried.

``PushDispatcher`` is the core ``Pusher`` of every protocol it has a transport for (APNs for iOS,
FCM for Android). ``wake``/``wake_many``/``wake_at`` only write an owed row (``push_wakeups``,
one per device, the earlier due time wins) and nudge the worker (``owe`` writes them in the
caller's transaction: ``OwingPusher``); the worker takes due rows in
batches, leases them (a crash during the send retries them), sends concurrently and applies each
answer (``mdm.push.types.Outcome``) with its event in one transaction:

- SENT: done, unless the device still has commands to fetch: then it is pushed again after
  ``retry_seconds`` (doubling to ``retry_max_seconds``, jittered) for as long as it stays silent;
- INVALID_TOKEN: the device's token is marked invalid (``push_valid``; a newer TokenUpdate sets
  it again) with a ``push_token_invalid`` event; the row is dropped, never retried;
- RETRY: again after the back-off or the server's Retry-After, whichever is longer;
- CREDENTIALS: one ``push_credentials_refused`` event per circuit opening; the rows are kept
  (``resume`` makes them due when the credentials are replaced);
- REJECTED: logged and dropped; UNAVAILABLE (circuit open, no credentials): kept, tried later.

Devices without a valid token are never pushed. ``mdm.push.batch`` sends a taken batch and
writes its answers; ``mdm.push.sweeps`` adds the recovery pass and the daily sweep of silent
devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.push import OwedPart, PushReceipts, SessionReceipts
from mdm.db.engine import Database
from mdm.db.models import Protocol, utcnow
from mdm.db.writer_turns import WriterTurns
from mdm.push import batch, metrics, store, taking
from mdm.push.answers import sort_answers
from mdm.push.config import PushConfig
from mdm.push.event_types import PUSH_FAILURES_AGGREGATED
from mdm.push.failure_tally import FailureTally
from mdm.push.pacing import RepushBudget
from mdm.push.service_stats import (
    SERVICE_NAMES,
    InvalidToken,
    ServiceStats,
    accepted_by_reason,
    service_name,
)
from mdm.push.store_owed import DueRow
from mdm.push.types import PushResult, PushTransport

log = logging.getLogger("mdm.push")

CHUNK = 1000  # devices per statement and transaction when many are woken at once
# Batches the worker keeps in flight: the next one is taken from the database while the gateway
# answers the previous ones (``push.concurrency`` bounds the pushes in flight across them).
PIPELINE = 3
# A take's statements run in milliseconds. One that runs 30 s has a plan gone wrong or waits on
# a lock: PostgreSQL cancels it and the worker takes again, newly planned, after a pause.
TAKE_TIMEOUT_SECONDS = 30.0


class PushDispatcher:
    def __init__(
        self,
        db: Database,
        config: PushConfig,
        transports: Mapping[Protocol, PushTransport],
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        lease_seconds: float = 300.0,
        idle_seconds: float = 10.0,
        receipts: PushReceipts | None = None,
        inline_writes: bool = False,
        turns: WriterTurns | None = None,
    ) -> None:
        self.db = db
        # SQLite, a worker process of its own (``mdm.push.worker_process``): the take and the
        # apply run their statements on the loop's thread (``Database.transaction(inline=True)``),
        # so that SQLite's write lock, which they hold from BEGIN IMMEDIATE, is not held across
        # the turns of a loop busy sending pushes: the server, the other writer, waits for the
        # statements alone. Not in the server's process: a take's SELECT would stall its loop.
        self.inline_writes = inline_writes
        # SQLite, a worker process of its own: the take's claim and the apply hold a turn
        # (``mdm.db.writer_turns``) while they wait for and hold the write lock, so that the
        # server's bulk batches give way to them instead of running back to back.
        self.turns = turns
        self.config = config
        self.transports = dict(transports)
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.lease_seconds = lease_seconds
        self.idle_seconds = idle_seconds
        # Told the accepted pushes per wake-up reason after each batch (bulk operations count
        # the devices they woke this way).
        self.receipts = receipts
        self.stats = {
            name: ServiceStats(configured=any(service_name(p) == name for p in self.transports))
            for name in SERVICE_NAMES.values()
        }
        self._nudge = asyncio.Event()
        self._limit: tuple[int, asyncio.Semaphore] | None = None
        self.in_flight: set[asyncio.Task[None]] = set()  # batches sent, not yet recorded
        self.failures = FailureTally()  # push_failures_aggregated, per service and reason
        self.counters = batch.Counters(self.stats, self.failures)
        self._owed_refreshed = 0.0
        self.budget = RepushBudget(lambda: self.config.repush_per_second, lambda: self.config.batch_size)

    @property
    def protocols(self) -> list[int]:
        return [int(p) for p in self.transports]

    def add_transport(self, protocol: Protocol, transport: PushTransport) -> None:
        """A transport that could not be built at start-up (the first real push certificate,
        installed while running): its protocol's devices are pushed from now on."""
        self.transports[protocol] = transport
        self.stats[service_name(protocol)].configured = True
        self._nudge.set()

    # ---- the Pusher seam ------------------------------------------------------------------------
    async def wake(self, device_id: int, reason: str) -> None:
        await self.wake_many([device_id], reason)

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        """Owe a wake-up now to these devices: one statement per ``CHUNK``, one transaction each."""
        ids = list(dict.fromkeys(device_ids))
        for start in range(0, len(ids), CHUNK):
            await self._request(ids[start:start + CHUNK], self.clock(), reason)
        self.nudge()

    async def owe(self, session: AsyncSession, device_ids: Sequence[int], reason: str) -> None:
        """``OwingPusher``: owe a wake-up now to these devices in the caller's transaction (one
        statement; the caller calls ``nudge`` after its commit). A bulk batch owes its devices'
        wake-ups this way, with its commands."""
        if device_ids and self.transports:
            now = self.clock()
            await store.request(session, device_ids, now, reason, now, self.protocols)

    def owed_part(self, reason: str, dialect: str) -> OwedPart | None:
        """``PartOwingPusher``: ``owe`` as a part of the caller's statement (PostgreSQL) or
        transaction (SQLite's ``sqlite_direct``), the same rows (``store.request_part``,
        ``store.request_part_sqlite``); None without a transport, where ``owe`` writes nothing."""
        if not self.transports:
            return None
        now = self.clock()
        params = {"w_due": now, "w_reason": reason[:64], "w_now": now}
        if dialect == "postgresql":
            return OwedPart(store.request_part, params | {"w_protocols": self.protocols})
        if dialect == "sqlite":
            return OwedPart(store.request_part_sqlite, params | {"w_protocols": json.dumps(self.protocols)})
        return None

    async def wake_at(self, device_id: int, due: datetime, reason: str) -> None:
        await self._request([device_id], due, reason)
        self.nudge()

    async def _request(self, ids: Sequence[int], due: datetime, reason: str) -> None:
        if not ids or not self.transports:
            return
        async with self.db.transaction() as session:
            await store.request(session, ids, due, reason, self.clock(), self.protocols)

    def nudge(self) -> None:
        """Wake the worker (a new row may be due before the one it waits for)."""
        self._nudge.set()

    async def resume(self, protocol: Protocol) -> int:
        """The credentials of ``protocol`` were replaced: rows held by the open circuit are due
        now (batched) and the circuit is taken as closed until the service says otherwise."""
        self.stats[service_name(protocol)].circuit_open = False
        total = 0
        while True:
            async with self.db.transaction() as session:
                n = await store.resume(session, int(protocol), self.clock(), self.config.batch_size)
            total += n
            if n < self.config.batch_size:
                break
        self.nudge()
        return total

    # ---- the worker -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Send due wake-ups until cancelled (idle until a transport exists: the first push
        certificate may be installed while running)."""
        while not self.transports:
            self._nudge.clear()
            await self._nudge.wait()
        try:
            while True:
                self._nudge.clear()
                while len(self.in_flight) >= PIPELINE:
                    await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
                try:
                    taken, targets = await self._take()
                except Exception as exc:  # the database is away: the rows wait, nothing is lost
                    log.warning("push dispatch pass failed, will retry: %s", exc)
                    taken, targets = 0, []
                    await asyncio.sleep(min(self.idle_seconds, 5.0))
                if targets:
                    task = asyncio.create_task(self._deliver_logged(targets))
                    self.in_flight.add(task)
                    task.add_done_callback(self.in_flight.discard)
                if taken >= self.config.batch_size:
                    await asyncio.sleep(0)
                    continue
                await self._idle(taken)
        finally:
            for task in self.in_flight:
                task.cancel()
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def _idle(self, taken: int) -> None:
        # Failures of the last batches before a quiet spell are reported without a next batch.
        reports = self.failures.take_due()
        if reports:
            try:
                async with self.db.transaction() as session:
                    for body in reports:
                        events.emit(session, PUSH_FAILURES_AGGREGATED, **body)
            except Exception as exc:
                log.warning("push: the failure summary could not be recorded: %s", exc)
        timeout = self.idle_seconds
        try:
            # Asked again during the take (an enqueue's wake-up under load): the next take comes
            # at once, and the look-up of the next due time would be a statement for nothing.
            due = None if self._nudge.is_set() else await self._next_due()
            if time.monotonic() - self._owed_refreshed > self.idle_seconds:
                async with self.db.session() as session:
                    metrics.OWED.set(await store.owed_count(session))
                self._owed_refreshed = time.monotonic()
        except Exception as exc:
            log.debug("push: next due time unknown: %s", exc)
            due = None
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self.clock()).total_seconds()))
        if taken == 0:  # due rows another replica holds (SKIP LOCKED): do not spin on them
            timeout = max(timeout, 0.1)
        if timeout <= 0:
            return
        try:
            await asyncio.wait_for(self._nudge.wait(), timeout)
        except TimeoutError:
            pass

    async def _next_due(self) -> datetime | None:
        return await store.next_due_of(self.db, self.protocols)

    async def dispatch_once(self) -> int:
        """Take one batch of due rows, send them, apply the answers; the number of rows taken."""
        taken, targets = await self._take()
        if targets:
            await self._deliver(targets)
        return taken

    async def _take(self) -> tuple[int, list[DueRow]]:
        """Lease one batch of due rows and drop those owed nothing more: (rows taken, rows to
        push). Background rows beyond the re-push budget are deferred (``mdm.push.pacing``)."""
        now = self.clock()
        taken = await taking.take(
            self.db, now, self.config.batch_size, self.protocols, now + timedelta(seconds=self.lease_seconds),
            self.budget, timeout_seconds=TAKE_TIMEOUT_SECONDS, inline=self.inline_writes, turn=self._turn)
        if taken.deferred:
            metrics.DEFERRED.inc(len(taken.deferred))
        return taken.taken, taken.due

    def _turn(self) -> AbstractAsyncContextManager[None]:
        return self.turns.mine() if self.turns is not None else contextlib.nullcontext()

    def _concurrency(self) -> asyncio.Semaphore:
        """One limit on the pushes in flight across the batches (rebuilt when the setting moves)."""
        size = self.config.concurrency
        if self._limit is None or self._limit[0] != size:
            self._limit = (size, asyncio.Semaphore(size))
        return self._limit[1]

    async def _deliver(self, targets: list[DueRow]) -> None:
        """Send a taken batch, record the answers, tell the receipts."""
        # A few senders per batch, each sending in turn, rather than a task per push: a task per
        # push, and with PIPELINE batches in flight two thirds of them waiting at the semaphore,
        # cost more CPU than the database work of a wake-up. PIPELINE batches of this many senders
        # keep push.concurrency pushes in flight; the semaphore still bounds them.
        senders = min(len(targets), max(1, self.config.concurrency // PIPELINE))
        answered = await batch.send(targets, self.transports, self._concurrency(), senders,
                                    self.counters.failed)
        self.counters.sent(answered, self.clock)
        # SQLite: the receipts in the answers' transaction (one wait for the write lock a batch,
        # not two). PostgreSQL keeps them apart: several workers would otherwise hold the
        # operation's row lock, each until its whole apply committed.
        if self.db.is_sqlite and isinstance(self.receipts, SessionReceipts):
            await self._apply(answered, self.receipts)
        else:
            await self._apply(answered)
            await self._receipts(answered)

    async def _deliver_logged(self, targets: list[DueRow]) -> None:
        try:
            await self._deliver(targets)
        except Exception as exc:  # the rows stay leased: sent again when the lease ends
            log.warning("push: the answers of %d wake-up(s) were not recorded, they are retried after "
                        "their lease: %s", len(targets), exc)

    async def _receipts(self, answered: list[tuple[DueRow, PushResult]]) -> None:
        """Hand the accepted pushes of this batch, counted per reason, to ``receipts``; a failing
        receiver is logged, never raised into the worker (the pushes are sent and recorded)."""
        if self.receipts is None:
            return
        counts = accepted_by_reason(answered)
        if not counts:
            return
        try:
            await self.receipts.accepted(counts)
        except Exception:
            log.exception("push: the receipts of %d accepted push(es) were not taken", sum(counts.values()))

    # ---- answers --------------------------------------------------------------------------------
    def backoff(self, attempts: int) -> float:
        """retry_seconds * 2^(attempts-1), capped at retry_max_seconds (seconds, no jitter)."""
        base = self.config.retry_seconds * 2 ** max(0, min(attempts - 1, 40))
        return float(min(base, self.config.retry_max_seconds))

    def jittered(self, seconds: float) -> timedelta:
        return timedelta(seconds=seconds * self.rng.uniform(0.85, 1.15))

    async def _apply(self, answered: list[tuple[DueRow, PushResult]],
                     receipts: SessionReceipts | None = None) -> None:
        now = self.clock()
        # One jittered delay per attempt count and batch: a batch's rows rescheduled alike are one
        # statement, and successive batches still spread over the jitter.
        delays: dict[int, timedelta] = {}

        def backoff(attempts: int) -> timedelta:
            if attempts not in delays:
                delays[attempts] = self.jittered(self.backoff(attempts))
            return delays[attempts]

        todo = sort_answers(answered, now, backoff, self.jittered(self.config.retry_seconds))
        if receipts is None and await taking.record_accepted(self.db, todo, now, backoff, self.failures):
            self.counters.settle_circuits(answered)
            return
        async with self._turn(), self.db.transaction(inline=self.inline_writes) as session:
            await batch.write_answers(session, answered, todo, now, backoff, self.counters, receipts)
        self.counters.settle_circuits(answered)

    # ---- what the API shows ---------------------------------------------------------------------
    async def counts(self) -> tuple[int, int]:
        """(owed wake-ups, devices whose token was refused for good); refreshes the gauge."""
        async with self.db.session() as session:
            owed = await store.owed_count(session)
            invalid = await store.invalid_token_count(session)
        metrics.OWED.set(owed)
        return owed, invalid

    async def invalid_tokens(self, after_id: int, limit: int) -> list[InvalidToken]:
        async with self.db.session() as session:
            rows = await store.invalid_tokens(session, after_id, limit)
        return [InvalidToken(r.id, r.identifier, Protocol(r.protocol), r.push_changed_at) for r in rows]

    async def close(self) -> None:
        for transport in self.transports.values():
            try:
                await transport.close()
            except Exception as exc:
                log.warning("push: closing a transport failed: %s", exc)
