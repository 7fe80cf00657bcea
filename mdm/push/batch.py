"""One batch the push dispatcher took (``mdm.push.dispatcher``): its pushes sent by a few
senders in turn, the answers counted per service, and what they change written in one
transaction. The dispatcher decides when and with which limits; this module does a batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.push import SessionReceipts
from mdm.db.models import Protocol
from mdm.push import metrics, store
from mdm.push.answers import SortedAnswers, result_text
from mdm.push.event_types import PUSH_CREDENTIALS_REFUSED, PUSH_FAILURES_AGGREGATED, PUSH_TOKEN_INVALID
from mdm.push.failure_tally import FailureTally
from mdm.push.service_stats import ServiceStats, accepted_by_reason, service_name
from mdm.push.store_owed import DueRow
from mdm.push.types import Outcome, PushResult, PushTransport, WakeTarget

log = logging.getLogger("mdm.push")

Answered = list[tuple[DueRow, PushResult]]


class Counters:
    """What this process saw of each service (``stats``: ``GET /api/v1/push/status``), the
    failure metrics and the ``push_failures_aggregated`` tally."""

    def __init__(self, stats: dict[str, ServiceStats], failures: FailureTally) -> None:
        self.stats = stats
        self.failures = failures
        self._labels = metrics.ReasonLabels()

    def failed(self, row: DueRow, result: PushResult) -> None:
        service = service_name(row.protocol)
        reason = self._labels(service, result.reason or result.outcome.value)
        metrics.FAILED.labels(service, reason).inc()
        stats = self.stats[service]
        stats.failures[reason] = stats.failures.get(reason, 0) + 1
        self.failures.add(service, reason, result.outcome.value)

    def sent(self, answered: Answered, clock: Callable[[], datetime]) -> None:
        """The accepted pushes of a batch, counted once per service (not once per push)."""
        counts: dict[int, int] = {}
        for row, result in answered:
            if result.outcome is Outcome.SENT:
                counts[row.protocol] = counts.get(row.protocol, 0) + 1
        if not counts:
            return
        now = clock()
        for protocol, n in counts.items():
            service = service_name(protocol)
            metrics.sent(service).inc(n)
            stats = self.stats[service]
            stats.sent += n
            stats.last_success_at = now

    def settle_circuits(self, answered: Answered) -> None:
        """After the answers' commit (the event went out with the state): the last answer of a
        service says whether its circuit is open."""
        for row, res in answered:
            if res.outcome in (Outcome.SENT, Outcome.CREDENTIALS, Outcome.UNAVAILABLE):
                self.stats[service_name(row.protocol)].circuit_open = res.outcome is not Outcome.SENT


async def send(
    targets: Sequence[DueRow], transports: Mapping[Protocol, PushTransport], limit: asyncio.Semaphore,
    senders: int, on_failure: Callable[[DueRow, PushResult], None],
) -> Answered:
    """Send ``targets`` with ``senders`` senders, each one push at a time; every answer (a
    transport that raises is a RETRY), in the order they came."""
    answered: Answered = []
    rows = iter(targets)
    latencies = metrics.Latencies()
    perf_counter = time.perf_counter

    async def sender() -> None:
        # One permit per sender for its whole run (a sender has one push in flight at a
        # time): the same bound as a permit per push, at a sender's cost instead of a push's.
        async with limit:
            for row in rows:  # (one iterator shared by the senders: each row is sent once)
                started = perf_counter()
                try:  # (IntEnum keys: an int finds them)
                    result = await transports[cast(Protocol, row.protocol)].send(
                        WakeTarget(row.device_id, row.token, row.push_magic))
                except Exception as exc:  # a transport must classify; if it raises, try again later
                    log.warning("push: %s transport raised for device %d: %s", service_name(row.protocol),
                                row.device_id, type(exc).__name__)
                    result = PushResult(Outcome.RETRY, reason=f"error:{type(exc).__name__}")
                else:
                    latencies.add(service_name(row.protocol), perf_counter() - started)
                if result.outcome is not Outcome.SENT:  # (accepted pushes are counted per batch)
                    on_failure(row, result)
                answered.append((row, result))

    try:
        await asyncio.gather(*(sender() for _ in range(senders)))
    finally:
        latencies.flush()
    return answered


async def write_answers(
    session: AsyncSession, answered: Answered, todo: SortedAnswers, now: datetime,
    backoff: Callable[[int], timedelta], counters: Counters, receipts: SessionReceipts | None,
) -> None:
    """What a batch's answers (``todo``: sorted by ``mdm.push.answers``) change, with their
    events, in the caller's transaction."""
    for row, res in todo.invalid:
        service = service_name(row.protocol)
        if await store.invalidate_token(session, row.device_id, row.token or ""):
            events.emit(session, PUSH_TOKEN_INVALID, device_id=row.device_id, service=service,
                        reason=res.reason or "invalid token", status=res.status)
            await store.drop(session, [row.device_id])
        else:  # a newer token arrived during the send: push that one
            todo.later.append((row.device_id, row.requests, now, result_text(res), row.reason))
    for service, res in todo.refused.items():  # one event per circuit opening
        if not counters.stats[service].circuit_open:
            events.emit(session, PUSH_CREDENTIALS_REFUSED, service=service,
                        reason=res.reason or "credentials refused", status=res.status)
    for (requests, attempts, why), ids in todo.sent.items():
        await store.sent(session, ids, requests, why, now + backoff(attempts), now)
    await store.finish(session, todo.finish)
    await store.reschedule(session, todo.later)
    for body in counters.failures.take_due():
        events.emit(session, PUSH_FAILURES_AGGREGATED, **body)
    if receipts is not None and (counts := accepted_by_reason(answered)):
        await receipts.accepted_in(session, counts)
