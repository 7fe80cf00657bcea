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

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.push.store_owed import DueRow, Taken, due_select
from mdm.push.tables import PushWakeup

_w = cast(Table, PushWakeup.__table__)


def _by_requests(rows: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """(device id, requests read) grouped by ``requests`` (nearly always a few values a batch)."""
    groups: dict[int, list[int]] = {}
    for device_id, requests in rows:
        groups.setdefault(requests, []).append(device_id)
    return groups


def _unchanged(ids: Sequence[int], requests: int) -> Any:
    """These rows, still with the ``requests`` read (the ids in one JSON parameter)."""
    listed = select(func.json_each(json.dumps(list(ids))).table_valued("value").c.value)
    return (_w.c.device_id.in_(listed), _w.c.requests == requests)


async def read_due(session: AsyncSession, now: datetime, limit: int, protocols: Sequence[int]) -> list[Any]:
    """The read: ``store_owed.due_select``'s rows (in a session of its own, no write lock held)."""
    return list((await session.execute(due_select(session, now, limit, protocols))).all())


async def claim(
    session: AsyncSession, due: Sequence[DueRow], done: Sequence[tuple[int, int]],
    deferred: Sequence[tuple[int, int]], now: datetime, lease_until: datetime, defer_until: datetime | None,
) -> Taken:
    """In the worker's write transaction, after ``store_owed.due_select`` read the rows and
    ``store_owed.classify`` sorted them: lease ``due`` (due at ``lease_until``, attempt counted), delete
    ``done`` and move ``deferred`` (device id, requests read) to ``defer_until``, each only where
    ``requests`` is still as read and the row still due. How many were claimed, the rows leased
    (a row asked for again meanwhile is left due, for the next take) and the deferred ones."""
    leased: set[int] = set()
    for requests, ids in _by_requests((r.device_id, r.requests) for r in due).items():
        result = await session.execute(
            update(_w).where(*_unchanged(ids, requests), _w.c.due_at <= now)
            .values(due_at=lease_until, last_attempt_at=now, attempts=_w.c.attempts + 1)
            .returning(_w.c.device_id)
        )
        leased.update(result.scalars().all())
    dropped = 0
    for requests, ids in _by_requests(done).items():
        result = await session.execute(delete(_w).where(*_unchanged(ids, requests), _w.c.due_at <= now))
        dropped += int(result.rowcount)  # type: ignore[attr-defined]
    moved: list[int] = []
    if defer_until is not None:
        for requests, ids in _by_requests(deferred).items():
            result = await session.execute(
                update(_w).where(*_unchanged(ids, requests), _w.c.due_at <= now)
                .values(due_at=defer_until).returning(_w.c.device_id)
            )
            moved.extend(result.scalars().all())
    # Taken: the rows claimed (another take may have claimed some of those read: SQLite's writers
    # in one process, as in tests, each read the same due rows).
    return Taken(len(leased) + dropped + len(moved), [r for r in due if r.device_id in leased], moved)
