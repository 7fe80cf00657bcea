"""PostgreSQL's take and accepted-push apply, each ONE statement compiled once (``Prepared``).

A wake-up sent alone (an enqueue's, the common case) cost the server's loop ~1.9 ms of CPU on
PostgreSQL, more than the device's whole round trip: the take's statement (a CTE with a
correlated probe per row) was built and cache-keyed by SQLAlchemy on every call and ran beside
a lease UPDATE and a DELETE, each through the ORM session's execution; the accepted push was a
DELETE and an UPDATE more. Here the take is one data-modifying statement, the rows locked
(``FOR UPDATE SKIP LOCKED``), judged (``store_owed``'s rules), the owed ones leased and the others
deleted by the statement itself, and an accepted push is one statement as well; both run on the
session's connection without SQLAlchemy's execution (``mdm.db.prepared``). The device ids go in
one array parameter: the SQL text is the same for every batch.

Pacing (``mdm.push.pacing``) is in the statement too: a paced row is leased only while it ranks
within ``room`` of the batch's paced owed rows in due order (``store_owed.classify``'s rule); the
others come back unleased and locked, and the caller defers them in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, String, Table, and_, any_, bindparam, delete, func, not_, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device
from mdm.db.prepared import Direct, Prepared
from mdm.push.store_owed import DueRow, Taken, owed, queued_now
from mdm.push.tables import REPUSH, PushWakeup

_w = cast(Table, PushWakeup.__table__)
_d = cast(Table, Device.__table__)

_AT = PushWakeup.due_at.type


def _take_statement() -> Any:
    now = bindparam("now", type_=_AT)
    locked = (
        select(_w.c.device_id, _w.c.due_at, _w.c.reason, _w.c.attempts, _w.c.requests, _w.c.last_attempt_at)
        .join(_d, _d.c.id == _w.c.device_id)
        .where(_w.c.due_at <= now, _d.c.protocol == any_(bindparam("protocols", type_=ARRAY(Integer))))
        .order_by(_w.c.due_at)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(of=_w, skip_locked=True)
        .cte("locked")
    )
    still_owed = owed(now, locked.c.device_id, locked.c.reason, locked.c.last_attempt_at)
    judged = (
        select(locked.c.device_id, _d.c.protocol, locked.c.reason, locked.c.attempts, locked.c.requests,
               _d.c.push_token, _d.c.push_magic, locked.c.due_at, still_owed.label("owed"))
        .join(_d, _d.c.id == locked.c.device_id)
        # Materialized: inlined into ``ranked``, the judgement (a ``command_queue`` probe per row)
        # was evaluated once per use of ``owed``, twice a row.
        .cte("judged").prefix_with("MATERIALIZED")
    )
    paced = and_(judged.c.owed, judged.c.reason == any_(bindparam("paced", type_=ARRAY(String))))
    ranked = select(
        *judged.c,
        paced.label("paced"),
        func.row_number().over(partition_by=paced, order_by=(judged.c.due_at, judged.c.device_id))
        .label("rank"),
    ).cte("ranked")
    go = and_(ranked.c.owed, or_(not_(ranked.c.paced), ranked.c.rank <= bindparam("room", type_=Integer)))
    leased = (
        update(_w).where(_w.c.device_id == ranked.c.device_id, go)
        .values(due_at=bindparam("lease", type_=_AT), last_attempt_at=now, attempts=_w.c.attempts + 1)
        .returning(_w.c.device_id)
        .cte("leased")
    )
    dropped = (
        delete(_w).where(_w.c.device_id == ranked.c.device_id, not_(ranked.c.owed))
        .returning(_w.c.device_id)
        .cte("dropped")
    )
    return (
        select(ranked.c.device_id, ranked.c.protocol, ranked.c.reason, ranked.c.attempts, ranked.c.requests,
               ranked.c.push_token, ranked.c.push_magic, ranked.c.owed, go.label("go"))
        .order_by(ranked.c.due_at, ranked.c.device_id)
        .add_cte(leased, dropped)
    )


_TAKE = Prepared(_take_statement())
# The take's settings, local to its transaction (``store.take`` says why): with and without a
# statement timeout.
_PLANNED = func.set_config("plan_cache_mode", "force_custom_plan", True)
_TIMEOUT = func.set_config("statement_timeout", bindparam("timeout_ms", type_=String), True)
_SETTINGS = {True: Prepared(select(_PLANNED, _TIMEOUT)), False: Prepared(select(_PLANNED))}


def _taken(rows: Sequence[Any]) -> Taken:
    due: list[DueRow] = []
    deferred: list[int] = []
    for device_id, protocol, reason, attempts, requests, token, magic, still_owed, go in rows:
        if go:
            due.append(DueRow(device_id, protocol, reason, attempts + 1, requests, token, magic or ""))
        elif still_owed:
            deferred.append(device_id)
    return Taken(len(rows), due, deferred)


def _take_params(now: datetime, limit: int, protocols: Sequence[int], lease_until: datetime,
                 paced: frozenset[str], paced_room: int | None) -> dict[str, Any]:
    return {"now": now, "limit": limit, "protocols": list(protocols), "lease": lease_until,
            "paced": sorted(paced), "room": limit if paced_room is None else paced_room}


async def take(
    session: AsyncSession, now: datetime, limit: int, protocols: Sequence[int], lease_until: datetime,
    *, paced: frozenset[str], paced_room: int | None, timeout_seconds: float | None,
) -> Taken:
    """``store.take`` on PostgreSQL in one statement (after its settings): the rows owed nothing
    more are deleted and the owed ones leased by it, but for paced rows beyond ``paced_room``,
    returned as ``deferred`` (still locked by this transaction) for the caller to ``defer``."""
    if timeout_seconds is None:
        await _SETTINGS[False].execute(session, {})
    else:
        await _SETTINGS[True].execute(session, {"timeout_ms": str(max(1, int(timeout_seconds * 1000)))})
    return _taken(await _TAKE.execute(
        session, _take_params(now, limit, protocols, lease_until, paced, paced_room)))


_DEFER = Prepared(
    update(_w).where(_w.c.device_id == any_(bindparam("ids", type_=ARRAY(BIGINT))))
    .values(due_at=bindparam("due", type_=_AT))
)


async def take_direct(
    direct: Direct, now: datetime, limit: int, protocols: Sequence[int], lease_until: datetime,
    *, paced: frozenset[str], paced_room: int | None, timeout_seconds: float,
    defer_until: Callable[[int], datetime],
) -> Taken:
    """``take`` and the deferral of its paced rows beyond the budget (``defer_until(n)``: when
    ``n`` rows deferred now come due) on an ``autocommit`` connection, in one transaction block
    of three round trips (BEGIN with its settings, the take, COMMIT; the deferral a fourth when
    there is one) straight on asyncpg: through an ORM session the same transaction cost the
    server ~0.6 ms of CPU per wake-up sent alone (the session and its transaction, the
    connection's checkout and return, a greenlet hand-off per statement)."""
    settings = ("SET LOCAL plan_cache_mode = force_custom_plan; "
                f"SET LOCAL statement_timeout = {max(1, int(timeout_seconds * 1000))}")
    async with direct.block(settings):
        taken = _taken(await direct.execute(
            _TAKE, _take_params(now, limit, protocols, lease_until, paced, paced_room)))
        if taken.deferred:
            await direct.execute(_DEFER, {"ids": taken.deferred, "due": defer_until(len(taken.deferred))})
    return taken


def _sent_statement() -> Any:
    now = bindparam("now", type_=_AT)
    ids = bindparam("ids", type_=ARRAY(BIGINT))
    mine = and_(_w.c.device_id == any_(ids), _w.c.requests == bindparam("requests", type_=Integer))
    # Both parts judge "a command to fetch now" in the statement's one snapshot: a row is either
    # deleted or kept as a re-push, never both.
    gone = delete(_w).where(mine, queued_now(now).is_(None)).returning(_w.c.device_id).cte("gone")
    return (
        update(_w).where(mine, queued_now(now).is_not(None))
        .values(due_at=bindparam("repush_at", type_=_AT), last_result=bindparam("result", type_=String),
                reason=REPUSH)
        .add_cte(gone)
    )


_SENT = Prepared(_sent_statement())


def _sent_params(device_ids: Sequence[int], requests: int, result: str, repush_at: datetime,
                 now: datetime) -> dict[str, Any]:
    return {"ids": list(device_ids), "requests": requests, "result": result[:64], "repush_at": repush_at,
            "now": now}


async def sent(
    session: AsyncSession, device_ids: Sequence[int], requests: int, result: str, repush_at: datetime,
    now: datetime,
) -> None:
    """``store.sent`` on PostgreSQL: one statement for the whole group."""
    await _SENT.execute(session, _sent_params(device_ids, requests, result, repush_at, now))


async def sent_direct(direct: Direct, device_ids: Sequence[int], requests: int, result: str,
                      repush_at: datetime, now: datetime) -> None:
    """``sent`` as a statement of its own on an ``autocommit`` connection: the accepted pushes
    of a batch with nothing else to write (the common case) need no transaction block."""
    await direct.execute(_SENT, _sent_params(device_ids, requests, result, repush_at, now))


_NEXT_DUE = Prepared(
    select(_w.c.due_at).join(_d, _d.c.id == _w.c.device_id)
    .where(_d.c.protocol == any_(bindparam("protocols", type_=ARRAY(Integer))))
    .order_by(_w.c.due_at).limit(1)
)


async def next_due(direct: Direct, protocols: Sequence[int]) -> datetime | None:
    """``store.next_due`` on PostgreSQL, a statement of its own (``mdm.db.prepared.autocommit``):
    the worker asks it after every batch, with nothing else to run in a transaction."""
    rows = await direct.mappings(_NEXT_DUE, {"protocols": list(protocols)})
    return cast("datetime | None", rows[0]["due_at"]) if rows else None

