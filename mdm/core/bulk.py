"""Bulk operations: one command sent to every device, a group (with its subgroups) or a list of ids.

The request records the operation (state ``queuing``, how many devices it targets) in one
transaction and answers at once; a worker (``run``) then queues it in batches of ``batch_size``
devices in ascending device id (``bulk_queue.queue_batch``), ONE transaction per batch that also
moves the operation's cursor and counters: a crash never leaves a half-recorded batch and a
restart resumes exactly. Each batch locks the operation row first and checks its state and cursor,
so that replicas sharing a PostgreSQL database never queue the same batch twice, and a recall
stops the queuing at the next batch. Its devices' wake-ups (the reason ``bulk:<id>``) are owed in
the batch's transaction where the pusher keeps rows (``Pushers.owe``), else asked for after its
commit; the push service reports accepted pushes back (``accepted``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import devices, events, library
from mdm.core import store_bulk as store
from mdm.core.bulk_queue import Plan, make_plan, queue_batch
from mdm.core.errors import ArgumentsRefused, InvalidArgument, NotFound, ServiceError
from mdm.core.event_types import BULK_COMMAND_CREATED, BULK_COMMAND_RECALLED
from mdm.core.library import Translators
from mdm.core.push import Pushers, bulk_id_of, bulk_reason
from mdm.db.engine import Database
from mdm.db.models import BulkOperation, BulkState, BulkTarget, CommandStatus, Device, utcnow
from mdm.db.writer_turns import LIMIT_SECONDS, WriterTurns

log = logging.getLogger("mdm.bulk")

DEFAULT_BATCH_SIZE = 2000
RECALL_IN_REQUEST_SECONDS = 5.0
FINISHED = (BulkState.QUEUED.value, BulkState.RECALLED.value, BulkState.FAILED.value)
# Consecutive failures of one operation's batches before it is marked failed (a bug or a row
# that cannot be written, not a database that went away for a moment: the retries wait 0.5 s,
# doubling up to 30 s, about a minute in all).
MAX_FAILURES = 8
# SQLite: the share of its own batches' time the bulk worker may spend giving way to the push
# worker process (``mdm.db.writer_turns``): queuing takes at most 1.5 times as long.
GIVE_WAY_SHARE = 0.5
# A view's commands' counts are kept at least this many times as long as they took to count: a
# progress bar polling an operation every second (``mdm bench fleet``, an admin's page) made
# PostgreSQL scan all of its commands every second (~0.1 s of a backend's CPU per 200,000, so
# quadratic over a queuing of 10^6: tens of seconds of CPU beside the queuing's own ~35 s); with
# 20 the counting takes at most ~5 % of the time.
COUNTS_KEPT = 20
# How soon accepted wake-ups an operation's locked row kept out are written (``accepted``).
WOKEN_RETRY = 0.2


class NoTargets(ServiceError):
    """The target matches no device: nothing is recorded."""

    status = 422
    code = "no_targets"


@dataclass(frozen=True)
class BulkView:
    """An operation and the counts taken from its commands (delivered, completed, ...)."""

    op: BulkOperation
    by_status: dict[str, int]
    delivered: int

    def count(self, status: CommandStatus) -> int:
        return self.by_status.get(status.value, 0)


class BulkService:
    def __init__(
        self, db: Database, translators: Translators, pushers: Pushers, *,
        batch_size: int = DEFAULT_BATCH_SIZE, idle_seconds: float = 5.0, view_ttl: float = 1.0,
    ) -> None:
        self.db = db
        self.translators = translators
        self.pushers = pushers
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.view_ttl = view_ttl
        self._nudge = asyncio.Event()
        self._plans: dict[int, Plan] = {}
        self._failures: dict[int, int] = {}
        # bulk id -> (kept until, the state they were taken in, counts by status, delivered)
        self._views: dict[int, tuple[float, str, dict[str, int], int]] = {}
        self._by: dict[int, str | None] = {}  # who asked for a recall in progress here
        # The last command id a recall in progress here read (the next batch starts after it).
        # In memory: another replica, or this one after a restart, starts again from the first.
        self._recall_after: dict[int, int] = {}
        # Accepted wake-ups per operation not written yet (``accepted``: its row was locked).
        self._unwritten: dict[int, int] = {}
        self._retry: asyncio.Task[None] | None = None
        # How long a recall runs in the request before the worker takes the rest (the admin gets
        # 202, state recalling): 10^6 commands take tens of seconds, beyond proxies' timeouts.
        self.recall_seconds = RECALL_IN_REQUEST_SECONDS
        # SQLite: before each batch, give way to the push worker process when it waits for the
        # write lock (``mdm.db.writer_turns``): back-to-back batches starved it of the lock.
        self.turns = WriterTurns.for_url(db.url) if db.is_sqlite else None
        # ... for at most this share of the time its own batches took (a push worker slowed down,
        # e.g. by a loaded host, does not slow queuing by more than that), at most 1 s a batch.
        self.give_way_share = GIVE_WAY_SHARE
        self._batches_took = 0.0

    # ---- the request --------------------------------------------------------------------------
    async def create(
        self, type_name: str, args: dict[str, Any] | None, *, device_ids: Sequence[int] | None = None,
        group: int | None = None, by: str | None,
    ) -> BulkOperation:
        """Record an operation for these devices, the devices of ``group`` and its subgroups, or
        (neither given) every device enrolled now. Arguments are checked once, here."""
        ctype = library.lookup(type_name)
        args = dict(args or {})
        try:
            self.translators.check_args(ctype, args)
        except InvalidArgument as exc:
            raise ArgumentsRefused(exc.message, **exc.details) from None
        public = args
        for protocol in sorted(ctype.protocols):
            if self.translators.get(protocol) is not None:
                public = self.translators.public_args(ctype, args, Device(protocol=protocol.value))
                break
        wanted: list[int] = []
        group_ids: list[int] | None = None
        # The targets are counted before the write transaction: a count reads every device (280 ms
        # at 10^6 on SQLite), and SQLite's writer, every check-in behind it, would wait for it. A
        # device deleted meanwhile is not counted at the end (``targeted = queued + skipped``).
        async with self.db.session() as session:
            if device_ids is not None:
                wanted = sorted(set(device_ids))
                if not await store.count_known(session, wanted):
                    raise NoTargets(f"none of the {len(wanted)} device id(s) given names a device")
                target, max_id, targeted = BulkTarget.DEVICES, wanted[-1], len(wanted)
            else:
                if group is not None:
                    group_ids = await devices.group_and_descendants(session, group)
                max_id = await store.max_device_id(session)
                targeted = await store.count_devices(session, max_id, group_ids)
                if not targeted:
                    raise NoTargets(f"group {group} and its subgroups have no device" if group is not None
                                    else "there is no device to send it to")
                target = BulkTarget.ALL if group is None else BulkTarget.GROUP
        async with self.db.transaction() as session:
            now = utcnow()
            op = await store.add_operation(session, BulkOperation(
                type=ctype.name, args=public, request_args=args, target=target.value, group_id=group,
                group_ids=group_ids, state=BulkState.QUEUING.value, cursor=0, max_device_id=max_id,
                targeted=targeted, queued=0, skipped=0, skipped_reasons={}, woken=0, recalled=0,
                created_by=by, created_at=now, updated_at=now,
            ), wanted)
            events.emit(session, BULK_COMMAND_CREATED, bulk=op.id, command_type=ctype.name,
                        target=target.value, group=group, targeted=targeted, created_by=by)
        self._nudge.set()
        return op

    # ---- the worker ---------------------------------------------------------------------------
    async def run(self) -> None:
        """The worker: carry every unfinished operation on, one batch of each in turn (resumes
        what a stopped server left queuing or recalling); sleep until nudged when idle."""
        try:
            while True:
                self._nudge.clear()
                async with self.db.session() as session:
                    pending = await store.unfinished(session)
                for bulk_id in pending:
                    if self.turns is not None:
                        room = self.give_way_share * self._batches_took - self.turns.waited
                        if room > 0:
                            await self.turns.give_way(min(room, LIMIT_SECONDS))
                    started = time.monotonic()
                    await self.step(bulk_id)
                    self._batches_took += time.monotonic() - started
                if not pending:
                    try:
                        await asyncio.wait_for(self._nudge.wait(), self.idle_seconds)
                    except TimeoutError:
                        pass
        finally:
            if self.turns is not None:
                self.turns.close()

    async def step(self, bulk_id: int) -> bool:
        """One batch of the operation (queuing or recalling); False once it has nothing left to
        do. An error is logged and the batch retried at the next step; after ``MAX_FAILURES`` in a
        row the operation is marked failed."""
        try:
            more = await self._step(bulk_id)
        except Exception as exc:
            failures = self._failures[bulk_id] = self._failures.get(bulk_id, 0) + 1
            log.exception("bulk operation %d: a batch failed (%d in a row)", bulk_id, failures)
            if failures >= MAX_FAILURES:
                await self._fail(bulk_id, f"{type(exc).__name__}: {exc}"[:500])
                return False
            await asyncio.sleep(min(30.0, 0.5 * 2 ** (failures - 1)))
            return True
        self._failures.pop(bulk_id, None)
        if not more:
            self._plans.pop(bulk_id, None)
        return more

    async def _step(self, bulk_id: int) -> bool:
        async with self.db.transaction() as session:
            op = await store.get(session, bulk_id, for_update=True)
            if op is None or op.state in FINISHED:
                return False
            if op.state == BulkState.RECALLING:
                more, last_id = await self._recall_batch(session, op)
                outcome = None
            else:
                plan = self._plans.get(bulk_id)
                if plan is None:
                    plan = self._plans[bulk_id] = make_plan(op, self.translators)
                outcome = await queue_batch(session, op, plan, self.translators, self.batch_size)
                # The wake-ups are owed in the batch's own transaction where the pusher keeps them
                # as rows (the push dispatcher): no transaction of their own after it, which on
                # SQLite queued behind the push worker's for each 1,000 devices, and none lost to a
                # crash between the two; a batch rolled back leaves neither.
                reason = bulk_reason(bulk_id)
                owed = [p for p, ids in outcome.woken.items()
                        if await self.pushers.owe(session, p, ids, reason)]
        if outcome is None:  # a recall batch: its position moves on only once the batch committed
            if more and last_id is not None:
                self._recall_after[bulk_id] = last_id
            else:
                self._recall_after.pop(bulk_id, None)
            return more
        self.pushers.owed(owed)
        for protocol, ids in outcome.woken.items():
            if protocol not in owed:  # (a pusher that wakes otherwise: after the commit)
                await self.pushers.wake(protocol, ids, reason)
        return not outcome.done

    async def _fail(self, bulk_id: int, error: str) -> None:
        self._plans.pop(bulk_id, None)
        self._failures.pop(bulk_id, None)
        async with self.db.transaction() as session:
            op = await store.get(session, bulk_id, for_update=True)
            if op is not None and op.state not in FINISHED:
                op.state, op.error, op.request_args = BulkState.FAILED.value, error, None
                op.finished_at = op.updated_at = utcnow()

    # ---- recall -------------------------------------------------------------------------------
    async def recall(self, bulk_id: int, *, by: str | None) -> BulkOperation:
        """Stop queuing and remove, in batches, every command of the operation still queued and
        never delivered (those the devices hold are left to finish); batches beyond
        ``recall_seconds`` are left to the worker (the operation is answered ``recalling``).
        Idempotent: a recalled operation is answered as it is."""
        async with self.db.transaction() as session:
            op = await self._get(session, bulk_id, for_update=True)
            if op.state != BulkState.RECALLED:
                op.state = BulkState.RECALLING.value
                op.request_args = None
                op.updated_at = utcnow()
        self._by[bulk_id] = by
        deadline = time.monotonic() + self.recall_seconds
        while await self.step(bulk_id):
            if time.monotonic() >= deadline:
                self._nudge.set()  # the worker carries the rest on, batch by batch
                break
        self._views.pop(bulk_id, None)
        async with self.db.session() as session:
            return await self._get(session, bulk_id)

    async def _recall_batch(self, session: AsyncSession, op: BulkOperation) -> tuple[bool, int | None]:
        """One batch of a recall: (whether there may be more, the last command id it read)."""
        by = self._by.get(op.id)
        now = utcnow()
        detail = f"recalled by {by or 'unknown'} before delivery (bulk operation {op.id})"
        batch = await store.recall_batch(session, op.id, self.batch_size, now, detail,
                                         after=self._recall_after.get(op.id, 0))
        removed = batch.removed
        op.recalled += len(removed)
        op.updated_at = now
        if removed:
            events.emit(session, BULK_COMMAND_RECALLED, bulk=op.id, command_type=op.type, count=len(removed),
                        commands=[(r.device_id, r.guid) for r in removed], by=by)
        if not batch.more:  # (not "fewer removed than asked": some may have been claimed meanwhile)
            op.state = BulkState.RECALLED.value
            op.finished_at = now
            self._by.pop(op.id, None)
            return False, None
        return True, batch.last_id

    # ---- reading ------------------------------------------------------------------------------
    async def _get(self, session: AsyncSession, bulk_id: int, *, for_update: bool = False) -> BulkOperation:
        op = await store.get(session, bulk_id, for_update=for_update)
        if op is None:
            raise NotFound(f"no bulk operation {bulk_id}")
        return op

    async def view(self, bulk_id: int) -> BulkView:
        """The operation, read at every call, with its commands' counts, which are a GROUP BY over
        all of its commands (at 10^6 a scan of the table taking a backend, and its parallel
        workers, most of a second): kept ``view_ttl`` seconds, and at least ``COUNTS_KEPT`` times
        as long as they took, so that a polled progress costs the database a bounded share of
        its time whatever the size; taken again when the operation's state changes."""
        async with self.db.session() as session:
            op = await self._get(session, bulk_id)
            cached = self._views.get(bulk_id) if self.view_ttl > 0 else None  # (0: always counted)
            if cached is not None and cached[0] > time.monotonic() and cached[1] == op.state:
                return BulkView(op, cached[2], cached[3])
            started = time.monotonic()
            by_status, delivered = await store.status_counts(session, bulk_id)
        if self.view_ttl > 0:
            took = time.monotonic() - started
            if len(self._views) > 1000:
                self._views.clear()
            until = started + took + max(self.view_ttl, COUNTS_KEPT * took)
            self._views[bulk_id] = (until, op.state, by_status, delivered)
        return BulkView(op, by_status, delivered)

    async def skipped(self, bulk_id: int, *, after: int, limit: int) -> list[tuple[int, str]]:
        async with self.db.session() as session:
            await self._get(session, bulk_id)
            return await store.skipped_page(session, bulk_id, after=after, limit=limit)

    async def page(self, *, limit: int, before_id: int | None) -> list[BulkOperation]:
        async with self.db.session() as session:
            return await store.page(session, limit=limit, before_id=before_id)

    # ---- PushReceipts -------------------------------------------------------------------------
    async def accepted(self, by_reason: Mapping[str, int]) -> None:
        """Count the wake-ups the push provider accepted for bulk operations (other reasons are
        not ours); one UPDATE per operation. Never raises: the push worker must go on. On
        PostgreSQL an operation whose row a batch holds (from its start to its commit) is not
        waited for: its count is kept here and added by the next call, or ``WOKEN_RETRY``
        seconds later (a push worker waited for the batch, ~180 ms a time at 10^5 under load,
        and the next batch for the worker's transaction in turn)."""
        counts = _by_operation(by_reason)
        for bulk_id, n in counts.items():
            self._unwritten[bulk_id] = self._unwritten.get(bulk_id, 0) + n
        if not self._unwritten:
            return
        pending, self._unwritten = self._unwritten, {}
        left: dict[int, int] = {}
        try:  # (one UPDATE by key per operation: inline, the write lock held for it alone)
            async with self.db.transaction(inline=True) as session:
                left = await store.add_woken(session, pending, skip_locked=not self.db.is_sqlite)
        except Exception:
            log.exception("counting accepted wake-ups of bulk operations %s failed", sorted(pending))
        for bulk_id, n in left.items():
            self._unwritten[bulk_id] = self._unwritten.get(bulk_id, 0) + n
        if self._unwritten and (self._retry is None or self._retry.done()):
            self._retry = asyncio.create_task(self._accepted_later())

    async def _accepted_later(self) -> None:
        await asyncio.sleep(WOKEN_RETRY)
        self._retry = None  # (this task may schedule the next one)
        await self.accepted({})

    async def accepted_in(self, session: AsyncSession, by_reason: Mapping[str, int]) -> None:
        """``SessionReceipts``: the same counts in the push worker's transaction of the batch."""
        counts = _by_operation(by_reason)
        if counts:
            await store.add_woken(session, counts)


def _by_operation(by_reason: Mapping[str, int]) -> dict[int, int]:
    """Accepted wake-ups per bulk operation (the reasons ``bulk:<id>``; others are not ours)."""
    counts: dict[int, int] = {}
    for reason, n in by_reason.items():
        bulk_id = bulk_id_of(reason)
        if bulk_id is not None and n > 0:
            counts[bulk_id] = counts.get(bulk_id, 0) + n
    return counts
