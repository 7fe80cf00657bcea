"""The writes of a command round trip (``mdm.core.commands``: ``delivered``, ``complete``): the
queue row in flight and out, the command's final columns, its journal entries and events.

They are the hottest statements of the server (a round trip runs them all) and run as
``mdm.db.prepared.Prepared`` statements (compiled once, straight on the session's DB-API
connection). On PostgreSQL a first delivery and a final answer are one statement each
(data-modifying CTEs); on SQLite (no DML in CTEs) one per table. Taking an answered command out
of the queue also tells whether the device has any other command queued (``drained``): if not,
the answer needs no look for a next command. The same writes outside a transaction block,
guarded by what was read, are in ``store_delivery_direct`` (PostgreSQL).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CTE, Table, bindparam, delete, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from mdm.core.store_events import EVENT_COLUMNS, flush_pending, insert_event
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Event, utcnow
from mdm.db.prepared import Prepared

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_events = cast(Table, Event.__table__)

_SET_IN_FLIGHT = Prepared(
    update(_queue).where(_queue.c.command_id == bindparam("b_id")).values(in_flight=True, not_before=None)
)
_JOURNAL_COLUMNS = ("command_id", "status", "detail", "at")
_INSERT_JOURNAL = Prepared(insert(_journal), _JOURNAL_COLUMNS)


def journal_and_event(source: CTE, command_id: Any, status: Any, detail: Any, at: Any) -> tuple[CTE, CTE]:
    """For each row of ``source`` (a step's write, one row): its journal entry and its event
    (the event's columns as ``e_<column>`` parameters), as CTEs of the step's one statement."""
    j, e = _journal.c, _events.c
    journaled = (
        insert(_journal)
        .from_select(["command_id", "status", "detail", "at"], select(command_id, status, detail, at))
        .returning(j.id)
        .cte("journaled")
    )
    evented = (
        insert(_events)
        .from_select(
            list(EVENT_COLUMNS),
            select(*(bindparam(f"e_{n}", type_=e[n].type) for n in EVENT_COLUMNS)).select_from(source),
        )
        .returning(e.id)
        .cte("evented")
    )
    return journaled, evented


def others_queued(device_id: Any, command_id: Any) -> Any:
    """Whether the device of the queue row (``device_id``, ``command_id``) has others queued."""
    other = _queue.alias("other")
    # Named in full: inside SQLite's RETURNING, SQLAlchemy renders column names unqualified.
    mine: Any = literal_column("other.device_id")
    its_id: Any = literal_column("other.command_id")
    return select(its_id).select_from(other).where(mine == device_id, its_id != command_id).exists()


# Take an in-flight command out of the queue; also says whether the device has others queued
# (if not, the answer needs no look for a next command).
_TAKE_IN_FLIGHT = Prepared(
    delete(_queue)
    .where(_queue.c.command_id == bindparam("b_id"), _queue.c.in_flight.is_(True))
    .returning(
        _queue.c.command_id,
        _queue.c.device_id,
        # SQLite renders RETURNING columns unqualified: the outer row is named in full here.
        others_queued(literal_column("command_queue.device_id"), literal_column("command_queue.command_id")),
    )
)
# ``_TAKE_IN_FLIGHT`` only if the command still has the status ``g_status`` and ``g_attempts``
# deliveries (a command known from its delivery, not read: ``mdm.core.in_flight``). SQLite: the
# write transaction holds the database's write lock from its first statement.
_TAKE_IN_FLIGHT_GUARDED = Prepared(
    delete(_queue)
    .where(
        _queue.c.command_id == bindparam("b_id"),
        _queue.c.in_flight.is_(True),
        select(_commands.c.id)
        .where(
            _commands.c.id == bindparam("b_id"),
            _commands.c.status == bindparam("g_status", type_=_commands.c.status.type),
            _commands.c.attempts == bindparam("g_attempts", type_=_commands.c.attempts.type),
        )
        .exists(),
    )
    .returning(
        _queue.c.command_id,
        _queue.c.device_id,
        others_queued(literal_column("command_queue.device_id"), literal_column("command_queue.command_id")),
    )
)
# The columns a final answer writes (``commands.complete``), prebuilt: a statement built per call
# costs more than running it (coercion and a cache key over the JSON values).
FINISH_COLUMNS = ("status", "active", "finished_at", "updated_at", "payload", "result_info", "result_data")
_FINISH = Prepared(
    update(_commands)
    .where(_commands.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}", type_=_commands.c[name].type) for name in FINISH_COLUMNS})
)
# Device ids whose last queued command a final answer took in this transaction (``drained``).
_DRAINED = "mdm_queue_drained"


async def insert_journal(
    session: AsyncSession, command_id: int, status: str, detail: str | None = None
) -> None:
    """``add_journal`` written at once with one Core INSERT (the delivery and answer paths), after
    whatever the session still holds (the journal's order is its ids)."""
    await flush_pending(session)
    await _INSERT_JOURNAL.execute(
        session, {"command_id": command_id, "status": status, "detail": detail, "at": utcnow()}
    )


def guarded_command() -> Any:
    """A CTE: the command ``b_id`` locked, only if it still has the status ``g_status`` and
    ``g_attempts`` deliveries (a guarded write's first step; empty otherwise)."""
    c = _commands.c
    return (
        select(c.id)
        .where(
            c.id == bindparam("b_id"),
            c.status == bindparam("g_status", type_=c.status.type),
            c.attempts == bindparam("g_attempts", type_=c.attempts.type),
        )
        .with_for_update()
        .cte("locked")
    )


def take_and_finish_pg(guarded: bool = False) -> Prepared:
    """One statement on PostgreSQL: take the row out of the queue if in flight, and only then
    write the command, its journal entry and the event (data-modifying CTEs run once each).
    ``guarded``: only if the command still has the status ``g_status`` and ``g_attempts``
    deliveries, checked under its row lock (the statement is then the whole transaction:
    ``store_delivery_direct``)."""
    which: Any = _queue.c.command_id == bindparam("b_id")
    if guarded:
        locked = guarded_command()
        which = _queue.c.command_id.in_(select(locked.c.id))
    taken = (
        delete(_queue)
        .where(which, _queue.c.in_flight.is_(True))
        .returning(_queue.c.command_id, _queue.c.device_id)
        .cte("taken")
    )
    finished = (
        update(_commands)
        .where(_commands.c.id.in_(select(taken.c.command_id)))
        .values({name: bindparam(f"b_{name}", type_=_commands.c[name].type) for name in FINISH_COLUMNS})
        .returning(_commands.c.id)
        .cte("finished")
    )
    j = _journal.c
    journaled, evented = journal_and_event(
        finished, finished.c.id, bindparam("j_status", type_=j.status.type),
        bindparam("j_detail", type_=j.detail.type), bindparam("j_at", type_=j.at.type),
    )
    # The main query sees the queue as it was before the DELETE: the taken row is excluded by id.
    others = others_queued(taken.c.device_id, taken.c.command_id)
    return Prepared(select(taken.c.command_id, taken.c.device_id, others).add_cte(journaled, evented))


# Unguarded, and guarded (``take_and_finish_pg``); also run outside a transaction block.
TAKE_AND_FINISH_PG = {guarded: take_and_finish_pg(guarded) for guarded in (False, True)}


async def take_and_finish(
    session: AsyncSession,
    command: Command,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
    *,
    guarded: bool = False,
) -> bool:
    """``take_in_flight``, then (only if it was in flight) ``finish_command``, the journal entry
    ``journal`` (status, detail) and the outbox row ``event``; False when nothing was in flight
    (nothing written). PostgreSQL: one statement; SQLite: one each. When the device has no
    other command queued, ``drained`` says so for the rest of the transaction. ``guarded``:
    ``command`` was not read in this transaction; nothing is written either unless its row still
    has the status and deliveries of ``command``."""
    guard = {"g_status": command.status, "g_attempts": command.attempts} if guarded else None
    if session.get_bind().dialect.name != "postgresql":
        if not await take_in_flight(session, command.id, guard=guard):
            return False
        await finish_command(session, command, values)
        await insert_journal(session, command.id, *journal)
        await insert_event(session, event)
        return True
    await flush_pending(session)
    params = {f"b_{name}": values[name] for name in FINISH_COLUMNS}
    params.update(b_id=command.id, j_status=journal[0], j_detail=journal[1], j_at=values["finished_at"])
    params.update({f"e_{key}": value for key, value in event.items()})
    params.update(guard or {})
    rows = await TAKE_AND_FINISH_PG[guarded].execute(session, params)
    if not rows:
        return False
    _note_drained(session, rows[0])
    for key, value in values.items():
        set_committed_value(command, key, value)
    return True


def _note_drained(session: AsyncSession, taken: Any) -> None:
    """``taken``: (command id, device id, whether the device has other commands queued)."""
    drained: set[int] = session.info.setdefault(_DRAINED, set())
    if taken[2]:
        drained.discard(taken[1])
    else:
        drained.add(taken[1])


def drained(session: AsyncSession, device_id: int) -> bool:
    """Whether a final answer in this transaction took the device's last queued command (no
    other was queued, deferred or not, when it was taken). The session holds the answer's
    transaction: on SQLite nothing can enqueue meanwhile; on PostgreSQL a command queued by
    another transaction after that statement wakes the device as any new command does."""
    return device_id in session.info.get(_DRAINED, ())


async def finish_command(session: AsyncSession, command: Command, values: dict[str, Any]) -> None:
    """Write the ``FINISH_COLUMNS`` in ``values`` to the command's row with one Core UPDATE by id
    and show them on the object as committed (nothing left for a flush)."""
    params = {f"b_{name}": values[name] for name in FINISH_COLUMNS}
    params["b_id"] = command.id
    await _FINISH.execute(session, params)
    for key, value in values.items():
        set_committed_value(command, key, value)


async def set_in_flight(session: AsyncSession, command_id: int) -> None:
    await _SET_IN_FLIGHT.execute(session, {"b_id": command_id})


def _mark_delivered_pg() -> Prepared:
    # PostgreSQL: in flight, the journal entry and the event of a first delivery in one statement.
    flight = (
        update(_queue)
        .where(_queue.c.command_id == bindparam("b_id"))
        .values(in_flight=True, not_before=None)
        .returning(_queue.c.command_id)
        .cte("flight")
    )
    j = _journal.c
    journaled = (
        insert(_journal)
        .values(
            command_id=bindparam("b_id"),
            status="delivered",
            detail=None,
            at=bindparam("j_at", type_=j.at.type),
        )
        .returning(j.id)
        .cte("journaled")
    )
    e = _events.c
    return Prepared(
        insert(_events)
        .values({c: bindparam(f"e_{c}", type_=e[c].type) for c in EVENT_COLUMNS})
        .add_cte(flight, journaled)
    )


_MARK_DELIVERED_PG = _mark_delivered_pg()


async def mark_delivered(session: AsyncSession, command_id: int, event: dict[str, Any] | None) -> None:
    """The claimed command is in flight; for its first delivery (``event``: the outbox row of
    ``command_delivered``) also its ``delivered`` journal entry and the event, in this order,
    after whatever the session still holds. PostgreSQL: one statement."""
    if event is None:
        await set_in_flight(session, command_id)
        return
    await flush_pending(session)
    if session.get_bind().dialect.name == "postgresql":
        params = {f"e_{key}": value for key, value in event.items()}
        params.update(b_id=command_id, j_at=utcnow())
        await _MARK_DELIVERED_PG.execute(session, params)
        return
    await set_in_flight(session, command_id)
    await insert_journal(session, command_id, "delivered")
    await insert_event(session, event)


async def take_in_flight(
    session: AsyncSession, command_id: int, *, guard: dict[str, Any] | None = None
) -> bool:
    """Take the in-flight row out of the queue (False: it was not in flight); notes whether
    the device has other commands queued (``drained``). ``guard``: only if the command still has
    the status ``g_status`` and ``g_attempts`` deliveries."""
    if guard is not None:
        rows = await _TAKE_IN_FLIGHT_GUARDED.execute(session, {"b_id": command_id, **guard})
    else:
        rows = await _TAKE_IN_FLIGHT.execute(session, {"b_id": command_id})
    if not rows:
        return False
    _note_drained(session, rows[0])
    return True
