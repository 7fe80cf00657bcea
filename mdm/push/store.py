"""Every SQL statement of the push dispatcher: owed wake-ups (``push_wakeups``) and what it reads
and writes of the core ``devices`` and ``command_queue`` tables.

Bulk paths are set-based: a wake-up for many devices is one ``INSERT ... SELECT ... ON CONFLICT``
per chunk (devices without a valid token are filtered by the same statement); a batch is taken by
one SELECT that also decides which rows are still owed, then one lease UPDATE and one DELETE; its
accepted pushes are applied by one DELETE (devices with nothing to fetch) and one UPDATE (the
re-pushes) per group of rows alike, other answers by one statement per kind. Due rows are taken
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that replicas share the work (SQLite has one
writer: the lock is a no-op there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db import point_read
from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, Device
from mdm.db.prepared import autocommit, autocommits
from mdm.push import store_pg, store_take
from mdm.push.store_owed import Taken, classify, due_select, owed_of
from mdm.push.tables import REPUSH, PushWakeup

_w = cast(Table, PushWakeup.__table__)
_d = cast(Table, Device.__table__)
_q = cast(Table, CommandQueueEntry.__table__)


def _insert(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _pushable_if(protocol_ok: Any) -> Any:
    """Devices that can be pushed: a valid, non-empty token and a protocol ``protocol_ok`` admits."""
    return and_(_d.c.push_valid.is_(True), _d.c.push_token.is_not(None), _d.c.push_token != "", protocol_ok)


def _pushable(protocols: Sequence[int]) -> Any:
    return _pushable_if(_d.c.protocol.in_(protocols))


async def request(
    session: AsyncSession, device_ids: Sequence[int], due: datetime, reason: str, now: datetime,
    protocols: Sequence[int],
) -> None:
    """Owe a wake-up at ``due`` to each device that can be pushed (valid token, a protocol with a
    transport); an existing row keeps the earlier due time and counts one more request. One
    statement for the whole list, the ids in ONE parameter (a PostgreSQL array, a JSON array read
    by SQLite's ``json_each``): no IN list to build and compile per call, whatever its length."""
    if not device_ids:
        return
    dialect = session.get_bind().dialect.name
    ids = list(device_ids)
    params: dict[str, Any] = {"due": due, "reason": reason[:64], "now": now, "protocols": list(protocols)}
    if dialect == "postgresql":
        params |= {"ids": ids, "lo": min(ids), "hi": max(ids)}
    else:
        params["ids"] = json.dumps(ids)
    await session.execute(_request_statement(dialect), params)


_REQUEST: dict[str, Any] = {}


def _request_statement(dialect: str) -> Any:
    """The statement of ``request``, built once per engine. On PostgreSQL the id range beside the
    list keeps the plan on the primary key, and the rows go in ascending device id, so that two
    transactions owing overlapping sets (a bulk batch, the worker's) lock them in one order."""
    stmt = _REQUEST.get(dialect)
    if stmt is not None:
        return stmt
    if dialect == "postgresql":
        ids = _d.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
        listed = and_(ids, _d.c.id.between(bindparam("lo"), bindparam("hi")))
    else:  # (SQLite looks each listed id up by key; a range would let it scan between them)
        each = func.json_each(bindparam("ids", type_=String)).table_valued("value")
        listed = _d.c.id.in_(select(each.c.value))
    stmt = _REQUEST[dialect] = _request_insert(dialect, listed, _pushable_param(), "")
    return stmt


def request_part(ids: Any) -> Any:
    """``request``'s statement on PostgreSQL for the devices whose ids the one-column SELECT
    ``ids`` gives, for a caller's own statement (a data-modifying CTE; ``ids`` may select from
    another, e.g. the row it wrote: none, nothing owed): the same rows, the same ``ON CONFLICT``.
    Its parameters: ``w_due``, ``w_reason``, ``w_now`` and ``w_protocols`` (a list of ints)."""
    pushable = _pushable_if(_d.c.protocol == any_(bindparam("w_protocols", type_=ARRAY(Integer))))
    return _request_insert("postgresql", _d.c.id.in_(ids), pushable, "w_")


def request_part_sqlite(ids: Any) -> Any:
    """``request_part`` on SQLite (a statement of the caller's ``sqlite_direct`` transaction, after
    its command): ``w_protocols`` is a JSON array of ints, read by ``json_each``."""
    each = func.json_each(bindparam("w_protocols", type_=String)).table_valued("value")
    pushable = _pushable_if(_d.c.protocol.in_(select(each.c.value)))
    return _request_insert("sqlite", _d.c.id.in_(ids), pushable, "w_")


def _request_insert(dialect: str, listed: Any, pushable: Any, prefix: str) -> Any:
    """The INSERT ... SELECT ... ON CONFLICT of ``request``: ``listed`` and ``pushable`` devices,
    with the parameters ``due``, ``reason`` and ``now`` named after ``prefix``."""
    source = select(
        _d.c.id, bindparam(f"{prefix}due", type_=PushWakeup.due_at.type),
        bindparam(f"{prefix}reason", type_=String),
        literal(0), literal(1), bindparam(f"{prefix}now", type_=PushWakeup.created_at.type),
    ).where(listed, pushable)
    if dialect == "postgresql":
        source = source.order_by(_d.c.id)
    insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
    columns = ["device_id", "due_at", "reason", "attempts", "requests", "created_at"]
    ins = insert_for(_w).from_select(columns, source)
    earlier = ins.excluded.due_at < _w.c.due_at
    return ins.on_conflict_do_update(
        index_elements=["device_id"],
        set_={
            "due_at": case((earlier, ins.excluded.due_at), else_=_w.c.due_at),
            "reason": case((earlier, ins.excluded.reason), (_w.c.reason == REPUSH, ins.excluded.reason),
                           else_=_w.c.reason),
            # A new request after a sent push starts the re-push back-off again.
            "attempts": case((_w.c.reason == REPUSH, 0), else_=_w.c.attempts),
            "requests": _w.c.requests + 1,
        },
    )


def _pushable_param() -> Any:
    """``_pushable`` with the protocols bound at execution (``protocols``, an expanding list)."""
    return _pushable_if(_d.c.protocol.in_(bindparam("protocols", expanding=True)))


async def take(
    session: AsyncSession, now: datetime, limit: int, protocols: Sequence[int], lease_until: datetime,
    *, paced: frozenset[str] = frozenset(), paced_room: int | None = None,
    timeout_seconds: float | None = None,
) -> Taken:
    """Claim up to ``limit`` due rows. A row still owed is leased (due at ``lease_until``, so a
    crash during the send retries it) and its attempt counted; a row owed nothing more is deleted:
    its device has no valid token (a newer token comes with a new request), or it is a re-push
    and the device has nothing to fetch now or was seen since the last push. Whether a row is
    still owed is decided by the SELECT itself (three statements per batch, none per row). Rows
    whose reason is in ``paced`` beyond the first ``paced_room`` (None: no limit) are returned as
    ``deferred``, untouched: the caller moves them with ``defer``. (SQLite's worker process reads
    outside its write transaction instead: ``mdm.push.store_take``.)

    On PostgreSQL the statements of the rest of the transaction run under ``timeout_seconds``
    (PostgreSQL cancels one that runs longer: the rows stay due for the next take) and are
    planned for the table as it is at each take, never from a plan cached on the connection
    while the table was small (``plan_cache_mode``; a take is planned in well under 1 ms)."""
    if session.get_bind().dialect.name == "postgresql":  # one prepared statement
        return await store_pg.take(session, now, limit, protocols, lease_until, paced=paced,
                                   paced_room=paced_room, timeout_seconds=timeout_seconds)
    rows = (await session.execute(due_select(session, now, limit, protocols))).all()
    due, done, deferred = classify(rows, paced, paced_room)
    if due:
        await session.execute(
            update(_w).where(_w.c.device_id.in_([r.device_id for r in due]))
            .values(due_at=lease_until, last_attempt_at=now, attempts=_w.c.attempts + 1)
        )
    await drop(session, done)
    return Taken(len(rows), due, deferred)


async def defer(session: AsyncSession, device_ids: Sequence[int], due: datetime) -> None:
    """Move these owed rows (paced, not sent) to ``due``; attempts and last attempt unchanged."""
    for start in range(0, len(device_ids), IN_CHUNK):
        await session.execute(
            update(_w).where(_w.c.device_id.in_(list(device_ids[start:start + IN_CHUNK]))).values(due_at=due)
        )


async def drop(session: AsyncSession, device_ids: Sequence[int]) -> None:
    if device_ids:
        await session.execute(delete(_w).where(_w.c.device_id.in_(list(device_ids))))


IN_CHUNK = 1000  # device ids per IN list


def _grouped(rows: Iterable[tuple[Any, int]]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for key, device_id in rows:
        groups.setdefault(key, []).append(device_id)
    return groups


async def finish(session: AsyncSession, done: Iterable[tuple[int, int]]) -> None:
    """Delete these (device id, requests seen) rows unless a newer request came meanwhile: one
    statement per distinct ``requests`` value (nearly always one per batch), not one per row."""
    for requests, ids in _grouped((n, i) for i, n in done).items():
        for start in range(0, len(ids), IN_CHUNK):
            await session.execute(
                delete(_w).where(_w.c.device_id.in_(ids[start:start + IN_CHUNK]), _w.c.requests == requests)
            )


async def reschedule(session: AsyncSession, rows: Iterable[tuple[int, int, datetime, str, str]]) -> None:
    """(device id, requests seen, due, last result, reason): unless a newer request came. One
    statement per distinct (requests, due, result, reason): a batch's re-pushes share one."""
    groups = _grouped(((n, due, result[:64], reason[:64]), i) for i, n, due, result, reason in rows)
    for (requests, due, result, reason), ids in groups.items():
        for start in range(0, len(ids), IN_CHUNK):
            await session.execute(
                update(_w)
                .where(_w.c.device_id.in_(ids[start:start + IN_CHUNK]), _w.c.requests == requests)
                .values(due_at=due, last_result=result, reason=reason)
            )


async def sent(
    session: AsyncSession, device_ids: Sequence[int], requests: int, result: str, repush_at: datetime,
    now: datetime,
) -> None:
    """Pushes accepted for these rows (claimed with ``requests``): each row nobody asked again for
    meanwhile is deleted, unless its device has a command to fetch now; then it stays as a re-push
    due at ``repush_at``. Set-based, compiled once: one statement on PostgreSQL
    (``store_pg.sent``), two on SQLite (``store_take.sent``)."""
    if session.get_bind().dialect.name == "postgresql":
        await store_pg.sent(session, device_ids, requests, result, repush_at, now)
    else:
        await store_take.sent(session, device_ids, requests, result, repush_at, now)


async def invalidate_token(session: AsyncSession, device_id: int, token: str) -> bool:
    """Mark the device's token invalid, unless it sent a newer one meanwhile; True if marked."""
    result = await session.execute(
        update(_d).where(_d.c.id == device_id, _d.c.push_token == token, _d.c.push_valid.is_(True))
        .values(push_valid=False)
        .returning(_d.c.id)
    )
    return result.first() is not None


async def recovery_candidates(
    session: AsyncSession, now: datetime, protocols: Sequence[int], after_id: int, limit: int
) -> list[tuple[int, datetime]]:
    """A page (by device id, after ``after_id``) of pushable devices with no owed row that have a
    queued command they have not seen — queued (or let through again after a NotNow) since their
    last poll, as after a crash between an enqueue's commit and its wake-up — with the time the
    first of their commands may be offered. A read: the caller owes them in a write of its own,
    so that SQLite's writer is not held while the queue is walked. It walks the queue and looks
    each device up by key (``owed_of``: never the fleet through the protocol index)."""
    first = func.min(func.coalesce(_q.c.not_before, now))
    newest = func.max(func.coalesce(_q.c.not_before, _q.c.created_at))
    seen = func.max(_d.c.last_seen_at)
    pushable = _pushable_if(owed_of(session, protocols))
    stmt = (
        select(_q.c.device_id, first)
        .join(_d, _d.c.id == _q.c.device_id)
        .where(_q.c.device_id > after_id, pushable, ~exists().where(_w.c.device_id == _q.c.device_id))
        # Grouped by the queue's device id alone (the device's last poll is one value per group),
        # so that the walk streams in index order: no sort of every queued row per page.
        .group_by(_q.c.device_id)
        .having(or_(seen.is_(None), newest > seen))
        .order_by(_q.c.device_id)
        .limit(limit)
    )
    return [(device_id, due) for device_id, due in (await session.execute(stmt)).all()]


async def owe_recovered(session: AsyncSession, rows: Sequence[tuple[int, datetime]], now: datetime) -> int:
    """Owe a ``recovery`` wake-up to each (device id, due) unless one is owed already (another
    request came since the read); how many were added."""
    added = 0
    # A multi-row VALUES binds 6 parameters per row: chunks keep a large push.batch_size under
    # the drivers' limits (asyncpg 32,767 parameters per statement).
    for start in range(0, len(rows), IN_CHUNK):
        stmt = _insert(session)(_w).values([
            {"device_id": device_id, "due_at": due, "reason": "recovery", "attempts": 0, "requests": 1,
             "created_at": now}
            for device_id, due in rows[start:start + IN_CHUNK]
        ]).on_conflict_do_nothing(index_elements=["device_id"]).returning(_w.c.device_id)
        added += len((await session.execute(stmt)).all())
    return added


async def silent_devices(
    session: AsyncSession, silent_before: datetime, protocols: Sequence[int], after_id: int, limit: int
) -> list[int]:
    """A page (by id) of pushable devices not seen since ``silent_before`` with no owed row."""
    seen = func.coalesce(_d.c.last_seen_at, _d.c.enrolled_at)
    rows = await session.scalars(
        select(_d.c.id)
        .where(_d.c.id > after_id, _pushable(protocols), seen < silent_before,
               ~exists().where(_w.c.device_id == _d.c.id))
        .order_by(_d.c.id)
        .limit(limit)
    )
    return list(rows)


async def next_due(session: AsyncSession, protocols: Sequence[int]) -> datetime | None:
    """The earliest due time (walks the due_at index until a row of these protocols)."""
    stmt = (
        select(_w.c.due_at).join(_d, _d.c.id == _w.c.device_id)
        .where(owed_of(session, protocols)).order_by(_w.c.due_at).limit(1)
    )
    return cast("datetime | None", await session.scalar(stmt))


async def next_due_of(db: Database, protocols: Sequence[int]) -> datetime | None:
    """``next_due`` as the worker asks it after every batch, with no session: on PostgreSQL one
    statement outside any transaction block, on SQLite on the point reader (one index walk on
    the loop's thread)."""
    if autocommits(db.engine):
        async with autocommit(db.engine) as direct:
            return await store_pg.next_due(direct, protocols)
    if db.is_sqlite:
        params = {"protocols": json.dumps(list(protocols))}
        row = await point_read.first(db.engine, store_take.NEXT_DUE, params)
        return None if row is None else cast(datetime, row[0])
    async with db.session() as session:
        return await next_due(session, protocols)


async def owed_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(_w)) or 0)


def _invalid() -> Any:
    return and_(_d.c.push_valid.is_(False), _d.c.push_token.is_not(None), _d.c.push_token != "")


async def invalid_token_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(_d).where(_invalid())) or 0)


async def invalid_tokens(session: AsyncSession, after_id: int, limit: int) -> list[Any]:
    """A page (by id) of devices whose push token the service refused for good."""
    rows = await session.execute(
        select(_d.c.id, _d.c.identifier, _d.c.protocol, _d.c.push_changed_at)
        .where(_invalid(), _d.c.id > after_id)
        .order_by(_d.c.id)
        .limit(limit)
    )
    return list(rows.all())


async def resume(session: AsyncSession, protocol: int, now: datetime, limit: int) -> int:
    """Make up to ``limit`` rows held by an open circuit (or missing credentials) due now."""
    held = or_(_w.c.last_result.like("credentials%"), _w.c.last_result.like("unavailable%"))
    ids = list(await session.scalars(
        select(_w.c.device_id).join(_d, _d.c.id == _w.c.device_id)
        .where(owed_of(session, [protocol]), held, _w.c.due_at > now).limit(limit)
    ))
    if ids:
        await session.execute(update(_w).where(_w.c.device_id.in_(ids)).values(due_at=now))
    return len(ids)
