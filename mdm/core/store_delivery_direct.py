"""The command round trip's statements on PostgreSQL outside a transaction block
(``mdm.db.prepared.autocommit``): a read, then one statement that checks under the row lock
that the command is still as read and writes everything the step changes.

In a transaction a delivery was BEGIN, the claim, in flight + journal + event, COMMIT; an answer
BEGIN, the command locked, taken + finished + journal + event, COMMIT: four round trips each, two
of them only the transaction block. Here each is two: the command read without a lock, then the
write, which changes nothing when a concurrent request got there first (another delivery or
answer, a recall) — the caller then runs the transactional path, which sees why.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import make_transient_to_detached

from mdm.core.store_delivery import FINISH_COLUMNS, TAKE_AND_FINISH_PG, journal_and_event
from mdm.core.store_queue_order import next_queued
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, CommandStatus, Event, utcnow
from mdm.db.prepared import Direct, Prepared

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_events = cast(Table, Event.__table__)
_PROCESSING = CommandStatus.PROCESSING.value

_BY_GUID = Prepared(select(*_commands.c).where(_commands.c.guid == bindparam("b_guid")))


def _next(ready_only: bool) -> Prepared:
    """The device's next deliverable command, the whole row: priority, then age; ``ready_only``:
    none that a NotNow deferred (as ``store_commands.claim_next``)."""
    q = _queue.c
    found = next_queued(bindparam("b_device"))
    if ready_only:
        found = found.where(or_(q.not_before.is_(None), q.not_before <= bindparam("b_now")))
    return Prepared(select(*_commands.c).where(_commands.c.id == found.scalar_subquery()))


_NEXT = {ready: _next(ready) for ready in (False, True)}


def _deliver(first: bool) -> Prepared:
    """Claim the command if it is still ``processing`` after ``g_attempts`` deliveries (as
    ``store_commands.claim``), put its queue row in flight; for a ``first`` delivery also the
    ``delivered`` journal entry and the event (as ``store_delivery.mark_delivered``)."""
    c = _commands.c
    claimed = (
        update(_commands)
        .where(
            c.id == bindparam("b_id"),
            c.status == _PROCESSING,
            c.attempts == bindparam("g_attempts", type_=c.attempts.type),
        )
        .values(
            attempts=c.attempts + 1,
            delivered_at=func.coalesce(c.delivered_at, bindparam("b_now", type_=c.delivered_at.type)),
            updated_at=bindparam("b_now", type_=c.updated_at.type),
        )
        .returning(c.id)
        .cte("claimed")
    )
    flight = (
        update(_queue)
        .where(_queue.c.command_id.in_(select(claimed.c.id)))
        .values(in_flight=True, not_before=None)
        .returning(_queue.c.command_id)
        .cte("flight")
    )
    stmt = select(flight.c.command_id)
    if first:
        j = _journal.c
        journaled, evented = journal_and_event(
            flight, flight.c.command_id, bindparam("j_status", "delivered", type_=j.status.type),
            bindparam("j_detail", None, type_=j.detail.type), bindparam("b_now", type_=j.at.type),
        )
        stmt = stmt.add_cte(journaled, evented)
    return Prepared(stmt)


_DELIVER = {first: _deliver(first) for first in (False, True)}
_ANSWER = TAKE_AND_FINISH_PG[True]  # the same statement in a transaction or outside one
_MAPPER = Command.__mapper__


def _command(values: dict[str, Any]) -> Command:
    """A detached ``Command`` of a row (read only: it belongs to no session)."""
    command: Command = _MAPPER.class_manager.new_instance()
    command.__dict__.update(values)
    make_transient_to_detached(command)
    return command


async def command_by_guid(conn: Direct, guid: str) -> Command | None:
    rows = await conn.mappings(_BY_GUID, {"b_guid": guid})
    return _command(rows[0]) if rows else None


async def next_command(conn: Direct, device_id: int, *, ready_only: bool) -> Command | None:
    """The device's next deliverable command (not claimed), or None: nothing is queued."""
    rows = await conn.mappings(_NEXT[ready_only], {"b_device": device_id, "b_now": utcnow()})
    return _command(rows[0]) if rows else None


async def deliver(conn: Direct, command: Command, event: dict[str, Any] | None) -> bool:
    """``command`` (as read) claimed and in flight, with ``event`` (the outbox row of its first
    delivery) and its journal entry; False, nothing written, when it changed since it was read."""
    params: dict[str, Any] = {"b_id": command.id, "g_attempts": command.attempts, "b_now": utcnow()}
    if event is not None:
        params.update({f"e_{key}": value for key, value in event.items()})
    return bool(await conn.execute(_DELIVER[event is not None], params))


async def take_and_finish(
    conn: Direct,
    command: Command,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
) -> bool | None:
    """``store_delivery.take_and_finish`` of ``command`` (as read) if it is still in flight with
    the status and deliveries it was read with: whether the device has other commands queued;
    None, nothing written, otherwise."""
    params = {f"b_{name}": values[name] for name in FINISH_COLUMNS}
    params.update(b_id=command.id, j_status=journal[0], j_detail=journal[1], j_at=values["finished_at"])
    params.update(g_status=command.status, g_attempts=command.attempts)
    params.update({f"e_{key}": value for key, value in event.items()})
    rows = await conn.execute(_ANSWER, params)
    return bool(rows[0][2]) if rows else None
