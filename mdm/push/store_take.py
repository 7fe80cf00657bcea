"""The take on SQLite, in two steps: the read (``store_owed.due_select``, which decides which due rows
are still owed) outside any write transaction, then ``claim``: the lease, the drop and the
deferral in a short write transaction, each only for rows nobody asked again for since the read.

On SQLite the push worker process and the server are two writers of one file lock. Read inside
the write transaction (``BEGIN IMMEDIATE``), the take held the lock for its SELECT too, the
larger part of its work, and the server's writes waited for it (in SQLite's busy handler, whose
sleeps grow to 100 ms). A request the server makes between the read and the claim adds one to
the row's ``requests`` (``store.request``): the claim's statements match ``(device_id,
requests)`` as read, so such a row is neither leased with what was read, nor deleted as owed
nothing more (the lost wake-ups of ``tests/test_push_take_atomic.py``), nor deferred; it stays
due and the next take reads it again. PostgreSQL keeps the one-transaction take with ``FOR UPDATE
SKIP LOCKED`` (several workers share the rows).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, String, Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device
from mdm.db.prepared import Prepared
from mdm.push.store_owed import DueRow, Taken, owed, queued_now
from mdm.push.tables import REPUSH, PushWakeup

_w = cast(Table, PushWakeup.__table__)
_d = cast(Table, Device.__table__)
_AT = PushWakeup.due_at.type


def _listed(name: str) -> Any:
    """The values of the JSON array parameter ``name`` (one parameter, whatever the length: the
    statements are compiled once, ``Prepared``)."""
    return select(func.json_each(bindparam(name, type_=String)).table_valued("value").c.value)


_NOW = bindparam("now", type_=_AT)
# Written so that no index applies to the devices' protocol (``store_owed.owed_of`` says why).
_OF_PROTOCOLS = (_d.c.protocol + 0).in_(_listed("protocols"))

_DUE = Prepared(
    select(_w.c.device_id, _d.c.protocol, _w.c.reason, _w.c.attempts, _w.c.requests, _d.c.push_token,
           _d.c.push_magic, owed(_NOW, _w.c.device_id, _w.c.reason, _w.c.last_attempt_at))
    .join(_d, _d.c.id == _w.c.device_id)
    .where(_w.c.due_at <= _NOW, _OF_PROTOCOLS)
    .order_by(_w.c.due_at)
    .limit(bindparam("limit", type_=Integer))
)
# These rows (ids in ``ids``), still with the ``requests`` read and due.
_UNCHANGED = (_w.c.device_id.in_(_listed("ids")), _w.c.requests == bindparam("requests", type_=Integer),
              _w.c.due_at <= _NOW)
_LEASE = Prepared(
    update(_w).where(*_UNCHANGED)
    .values(due_at=bindparam("until", type_=_AT), last_attempt_at=_NOW, attempts=_w.c.attempts + 1)
    .returning(_w.c.device_id)
)
_DROP = Prepared(delete(_w).where(*_UNCHANGED).returning(_w.c.device_id))
_DEFER = Prepared(update(_w).where(*_UNCHANGED).values(due_at=bindparam("until", type_=_AT))
                  .returning(_w.c.device_id))

_MINE = (_w.c.device_id.in_(_listed("ids")), _w.c.requests == bindparam("requests", type_=Integer))
_SENT_DONE = Prepared(delete(_w).where(*_MINE, queued_now(_NOW).is_(None)))
_SENT_AGAIN = Prepared(
    update(_w).where(*_MINE)
    .values(due_at=bindparam("repush_at", type_=_AT), last_result=bindparam("result", type_=String),
            reason=REPUSH)
)
NEXT_DUE = (  # for ``mdm.db.point_read`` (its reader on the loop's thread: one index walk)
    select(_w.c.due_at).join(_d, _d.c.id == _w.c.device_id).where(_OF_PROTOCOLS)
    .order_by(_w.c.due_at).limit(1)
)


def _by_requests(rows: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """(device id, requests read) grouped by ``requests`` (nearly always a few values a batch)."""
    groups: dict[int, list[int]] = {}
    for device_id, requests in rows:
        groups.setdefault(requests, []).append(device_id)
    return groups


async def read_due(session: AsyncSession, now: datetime, limit: int, protocols: Sequence[int]) -> list[Any]:
    """The read: up to ``limit`` due rows in due order, with whether each is still owed
    (``store_owed``'s rules) and what a push needs (in a session of its own, no write lock
    held)."""
    return await _DUE.execute(session, {"now": now, "limit": limit, "protocols": json.dumps(list(protocols))})


async def _each_group(session: AsyncSession, statement: Prepared, rows: Iterable[tuple[int, int]],
                      params: dict[str, Any]) -> list[int]:
    """``statement`` for each ``requests`` group of (device id, requests read); the ids it returned."""
    out: list[int] = []
    for requests, ids in _by_requests(rows).items():
        found = await statement.execute(session, params | {"ids": json.dumps(ids), "requests": requests})
        out.extend(row[0] for row in found)
    return out


async def claim(
    session: AsyncSession, due: Sequence[DueRow], done: Sequence[tuple[int, int]],
    deferred: Sequence[tuple[int, int]], now: datetime, lease_until: datetime, defer_until: datetime | None,
) -> Taken:
    """In the worker's write transaction, after ``read_due`` read the rows and
    ``store_owed.classify`` sorted them: lease ``due`` (due at ``lease_until``, attempt counted), delete
    ``done`` and move ``deferred`` (device id, requests read) to ``defer_until``, each only where
    ``requests`` is still as read and the row still due. How many were claimed, the rows leased
    (a row asked for again meanwhile is left due, for the next take) and the deferred ones."""
    leased = set(await _each_group(session, _LEASE, ((r.device_id, r.requests) for r in due),
                                   {"now": now, "until": lease_until}))
    dropped = await _each_group(session, _DROP, done, {"now": now})
    moved: list[int] = []
    if defer_until is not None:
        moved = await _each_group(session, _DEFER, deferred, {"now": now, "until": defer_until})
    # Taken: the rows claimed (another take may have claimed some of those read: SQLite's writers
    # in one process, as in tests, each read the same due rows).
    return Taken(len(leased) + len(dropped) + len(moved), [r for r in due if r.device_id in leased], moved)


async def sent(
    session: AsyncSession, device_ids: Sequence[int], requests: int, result: str, repush_at: datetime,
    now: datetime,
) -> None:
    """``store.sent`` on SQLite: its two statements, compiled once, the ids in one parameter."""
    params = {"ids": json.dumps(list(device_ids)), "requests": requests, "now": now}
    await _SENT_DONE.execute(session, params)
    await _SENT_AGAIN.execute(session, params | {"repush_at": repush_at, "result": result[:64]})
