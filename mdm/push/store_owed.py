"""The take's rules: up to a batch of due wake-ups in due order, with whether each is still owed
(``owed``) and what a push needs. ``due_select`` is SQLite's (read outside the write lock:
``mdm.push.store_take``); PostgreSQL's take (``mdm.push.store_pg``) works in two parts: the rows
are locked first (``FOR UPDATE SKIP LOCKED`` in a CTE that reads ``push_wakeups`` and the
devices' protocol only), then whether each is still owed is worked out over the locked rows alone.

Why two parts on PostgreSQL: at 10^6 devices one push worker's single-statement take (the
``command_queue`` probe in its select list, the devices' columns) ran for over six minutes
reading data files while another worker did all the pushing. Whatever plan PostgreSQL picks for
the lock, the per-row work now happens for at most ``limit`` rows, and the pushed columns of
``push_wakeups`` come out of the CTE: the lock step returns the newest version of a row another
transaction changed after the statement's snapshot (a new request: ``requests`` counts it), where
a second read of the table in the same statement would see the snapshot's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, case, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import CommandQueueEntry, Device
from mdm.push.tables import REPUSH, PushWakeup

_w = cast(Table, PushWakeup.__table__)
_d = cast(Table, Device.__table__)
_q = cast(Table, CommandQueueEntry.__table__)


class DueRow(NamedTuple):
    """A claimed wake-up still owed (a tuple: a batch makes thousands of them)."""

    device_id: int
    protocol: int
    reason: str
    attempts: int  # after this claim
    requests: int
    token: str
    push_magic: str


class Taken(NamedTuple):
    taken: int  # rows taken (owed or not)
    due: list[DueRow]  # to push now (leased)
    deferred: list[int]  # paced rows beyond the room: still owed, not leased (see ``defer``)


def owed_of(session: AsyncSession, protocols: Sequence[int]) -> Any:
    """The devices' protocol filter of a walk over owed rows. On SQLite it is written so that no
    index applies: without statistics SQLite starts from the devices' ``(protocol, id)`` index,
    visits every device of the protocol and sorts all owed rows, per batch, instead of walking
    ``ix_push_wakeups_due_at`` and looking each device up by key (``+ 0`` is the documented way
    to keep its planner off an index). PostgreSQL plans from its statistics, and an expression
    there would only spoil its estimate (it then hashed both tables and sorted every owed row)."""
    if session.get_bind().dialect.name == "sqlite":
        return (_d.c.protocol + 0).in_(protocols)
    return _d.c.protocol.in_(protocols)


def queued_now(now: datetime | Any, device_id: Any = _w.c.device_id) -> Any:
    """1 if the device (``device_id``: the owed row's, by default) has a command to fetch now (not
    deferred by a NotNow), else NULL. A correlated scalar subquery, one index probe per row:
    PostgreSQL turns an EXISTS into a hashed subplan or an anti-join that reads the whole command
    queue per batch."""
    return (
        select(literal(1)).select_from(_q)
        .where(_q.c.device_id == device_id, or_(_q.c.not_before.is_(None), _q.c.not_before <= now))
        .limit(1).scalar_subquery()
    )


def owed(now: datetime | Any, device_id: Any, reason: Any, last_attempt_at: Any) -> Any:
    """Whether a due row is still owed a push: not if its device has no valid token; a re-push
    only while its device has not been seen since the last push and has a command to fetch now."""
    pushable = and_(_d.c.push_valid.is_(True), _d.c.push_token.is_not(None), _d.c.push_token != "")
    seen = and_(_d.c.last_seen_at.is_not(None), last_attempt_at.is_not(None),
                _d.c.last_seen_at >= last_attempt_at)
    return case(
        (~pushable, False), (reason != REPUSH, True), (seen, False),
        else_=queued_now(now, device_id).is_not(None),
    )


def due_select(session: AsyncSession, now: datetime, limit: int, protocols: Sequence[int]) -> Any:
    """Up to ``limit`` due rows in due order, with whether each is still owed and what a push
    needs (SQLite's take reads it without locks: ``mdm.push.store_take``)."""
    return (
        select(_w.c.device_id, _d.c.protocol, _w.c.reason, _w.c.attempts, _w.c.requests, _d.c.push_token,
               _d.c.push_magic, owed(now, _w.c.device_id, _w.c.reason, _w.c.last_attempt_at))
        .join(_d, _d.c.id == _w.c.device_id)
        .where(_w.c.due_at <= now, owed_of(session, protocols))
        .order_by(_w.c.due_at)
        .limit(limit)
    )


def classify(
    rows: Sequence[Any], paced: frozenset[str], paced_room: int | None
) -> tuple[list[DueRow], list[int], list[int]]:
    """The take's rows as (to push, owed nothing more, paced beyond the room)."""
    due: list[DueRow] = []
    done: list[int] = []
    deferred: list[int] = []
    room = paced_room
    for device_id, protocol, reason, attempts, requests, token, magic, still_owed in rows:
        if not still_owed:
            done.append(device_id)
        elif room is not None and reason in paced:
            if room > 0:
                room -= 1
                due.append(DueRow(device_id, protocol, reason, attempts + 1, requests, token, magic or ""))
            else:
                deferred.append(device_id)
        else:
            due.append(DueRow(device_id, protocol, reason, attempts + 1, requests, token, magic or ""))
    return due, done, deferred
