"""How the push dispatcher (``mdm.push.dispatcher``) takes a batch of due wake-ups and records
a batch whose pushes were all accepted, the way each engine does it cheapest.

- SQLite: the due rows are read without the write lock, then claimed in a short write
  transaction where nobody asked for them again meanwhile (``mdm.push.store_take``).
- PostgreSQL with asyncpg: on a connection kept in autocommit mode (``mdm.db.prepared``), the
  take and its deferral in one transaction block straight on the driver, and the accepted pushes
  of a batch with nothing else to write as one statement each (``mdm.push.store_pg``). Through an
  ORM session the two cost ~1.2 ms of the server's CPU per wake-up sent alone, which with APNs
  configured is every single command's.
- Any other driver: an ORM session's transaction (``mdm.push.store.take``).

The dispatcher decides when and how much; this module only talks to the database.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from functools import partial

from mdm.db.engine import Database
from mdm.db.prepared import autocommit, autocommits
from mdm.push import store, store_pg, store_take
from mdm.push.answers import SortedAnswers
from mdm.push.failure_tally import FailureTally
from mdm.push.pacing import PACED_REASONS, RepushBudget
from mdm.push.store_owed import Taken, classify

Turn = Callable[[], AbstractAsyncContextManager[None]]


async def take(
    db: Database, now: datetime, limit: int, protocols: list[int], lease: datetime,
    budget: RepushBudget, *, timeout_seconds: float, inline: bool, turn: Turn,
) -> Taken:
    """Lease up to ``limit`` due rows, drop those owed nothing more and defer the paced ones
    beyond the budget's room (``mdm.push.pacing``)."""
    room = budget.room()
    if db.is_sqlite:
        taken = await _read_then_claim(db, now, limit, protocols, lease, budget, room, inline, turn)
    elif autocommits(db.engine):
        async with autocommit(db.engine) as direct:
            taken = await store_pg.take_direct(
                direct, now, limit, protocols, lease, paced=PACED_REASONS, paced_room=room,
                timeout_seconds=timeout_seconds, defer_until=partial(budget.defer_until, now))
    else:
        async with db.transaction() as session:
            taken = await store.take(session, now, limit, protocols, lease, paced=PACED_REASONS,
                                     paced_room=room, timeout_seconds=timeout_seconds)
            if taken.deferred:
                await store.defer(session, taken.deferred, budget.defer_until(now, len(taken.deferred)))
    if room is not None:
        budget.spend(sum(1 for row in taken.due if row.reason in PACED_REASONS))
    return taken


async def _read_then_claim(
    db: Database, now: datetime, limit: int, protocols: list[int], lease: datetime,
    budget: RepushBudget, room: int | None, inline: bool, turn: Turn,
) -> Taken:
    async with db.session() as session:
        rows = await store_take.read_due(session, now, limit, protocols)
    if not rows:
        return Taken(0, [], [])
    due, done, deferred = classify(rows, PACED_REASONS, room)
    requests = {row[0]: row[4] for row in rows}  # (device id -> requests read)
    until = budget.defer_until(now, len(deferred)) if deferred else None
    async with turn(), db.transaction(inline=inline) as session:
        return await store_take.claim(session, due, [(d, requests[d]) for d in done],
                                      [(d, requests[d]) for d in deferred], now, lease, until)


async def record_accepted(
    db: Database, todo: SortedAnswers, now: datetime, backoff: Callable[[int], timedelta],
    failures: FailureTally,
) -> bool:
    """Record a batch whose pushes were all accepted, with nothing else to write (no other
    answer, no failure report due), each group of rows alike as a statement of its own on an
    autocommit connection; False (nothing done) for any other batch or engine: the caller
    writes it in a transaction. A group is complete by itself: a crash between two leaves the
    later ones leased, pushed again when the lease ends, as a crash before a commit would."""
    if (todo.invalid or todo.refused or todo.finish or todo.later or failures.due()
            or not autocommits(db.engine)):  # (asyncpg only: never SQLite)
        return False
    async with autocommit(db.engine) as direct:
        for (requests, attempts, why), ids in todo.sent.items():
            await store_pg.sent_direct(direct, ids, requests, why, now + backoff(attempts), now)
    return True
