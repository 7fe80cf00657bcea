"""Every SQL statement of the command life cycle (``mdm.core.commands``): the queue, the journal
and the command log. The delivery path's statements (claim, in flight, take) are built once
against the tables: plain Core, no ORM bulk-update machinery, compiled-statement cache hits;
parameters are bound by name at execution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, delete, func, insert, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from mdm.core.store_events import flush_pending, insert_event
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, CommandStatus, Event, utcnow

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_events = cast(Table, Event.__table__)

_CLAIM = (
    update(_commands)
    .where(_commands.c.id == bindparam("b_id"), _commands.c.status == CommandStatus.PROCESSING.value)
    .values(
        attempts=_commands.c.attempts + 1,
        delivered_at=func.coalesce(_commands.c.delivered_at, bindparam("b_now")),
        updated_at=bindparam("b_now"),
    )
    .returning(*_commands.c)
)


def _next_id(ready_only: bool) -> Select[tuple[int]]:
    """The device's next deliverable command: priority, then age; ``ready_only``: not deferred
    by a NotNow (later in an exchange)."""
    q, c = _queue.c, _commands.c
    stmt = (
        select(q.command_id)
        .select_from(_queue.join(_commands, c.id == q.command_id))
        .where(q.device_id == bindparam("b_device"), c.status == CommandStatus.PROCESSING.value)
        .order_by(q.priority.desc(), q.command_id)
        .limit(1)
    )
    if ready_only:
        stmt = stmt.where(or_(q.not_before.is_(None), q.not_before <= bindparam("b_now")))
    return stmt


_CLAIM_VALUES = {
    "attempts": _commands.c.attempts + 1,
    "delivered_at": func.coalesce(_commands.c.delivered_at, bindparam("b_now")),
    "updated_at": bindparam("b_now"),
}
# Find and claim in one statement. SQLite: write transactions are serialised in-process, so
# nothing can claim the command between the sub-select and the update: no row means no command.
_CLAIM_NEXT_SQLITE = {
    ready: update(_commands)
    .where(
        _commands.c.id == _next_id(ready).scalar_subquery(),
        _commands.c.status == CommandStatus.PROCESSING.value,
    )
    .values(_CLAIM_VALUES)
    .returning(*_commands.c)
    for ready in (False, True)
}


def _claim_next_pg(ready_only: bool) -> Select[Any]:
    # PostgreSQL: a concurrent request may claim the command the sub-select found; the UPDATE
    # then matches nothing. The CTE also returns the id it found, so that a race ("found, not
    # claimed") is told apart from an empty queue.
    found = _next_id(ready_only).cte("next_command")
    claimed = (
        update(_commands)
        .where(
            _commands.c.id.in_(select(found.c.command_id)),
            _commands.c.status == CommandStatus.PROCESSING.value,
        )
        .values(_CLAIM_VALUES)
        .returning(*_commands.c)
        .cte("claimed")
    )
    return select(found.c.command_id.label("b_found"), *claimed.c).select_from(
        found.outerjoin(claimed, true())
    )


_CLAIM_NEXT_PG = {ready: _claim_next_pg(ready) for ready in (False, True)}
_BY_GUID_LOCKED = select(*_commands.c).where(_commands.c.guid == bindparam("b_guid")).with_for_update()
_SET_IN_FLIGHT = (
    update(_queue).where(_queue.c.command_id == bindparam("b_id")).values(in_flight=True, not_before=None)
)
_TAKE_IN_FLIGHT = (
    delete(_queue)
    .where(_queue.c.command_id == bindparam("b_id"), _queue.c.in_flight.is_(True))
    .returning(_queue.c.command_id)
)
_INSERT_JOURNAL = insert(_journal)
# The columns a final answer writes (``commands.complete``), prebuilt: a statement built per call
# costs more than running it (coercion and a cache key over the JSON values).
FINISH_COLUMNS = ("status", "active", "finished_at", "updated_at", "payload", "result_info", "result_data")
_FINISH = (
    update(_commands)
    .where(_commands.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}", type_=_commands.c[name].type) for name in FINISH_COLUMNS})
)


def add_journal(
    session: AsyncSession, command_id: int, status: str, detail: str | None = None
) -> CommandJournalEntry:
    entry = CommandJournalEntry(command_id=command_id, status=status, detail=detail, at=utcnow())
    session.add(entry)
    return entry


async def insert_journal(
    session: AsyncSession, command_id: int, status: str, detail: str | None = None
) -> None:
    """``add_journal`` written at once with one Core INSERT (the delivery and answer paths), after
    whatever the session still holds (the journal's order is its ids)."""
    await flush_pending(session)
    await session.execute(
        _INSERT_JOURNAL, {"command_id": command_id, "status": status, "detail": detail, "at": utcnow()}
    )


def _take_and_finish_pg() -> Select[tuple[int]]:
    # One statement on PostgreSQL: take the row out of the queue if in flight, and only then
    # write the command, its journal entry and the event (data-modifying CTEs run once each).
    taken = (
        delete(_queue)
        .where(_queue.c.command_id == bindparam("b_id"), _queue.c.in_flight.is_(True))
        .returning(_queue.c.command_id)
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
    journaled = (
        insert(_journal)
        .from_select(
            ["command_id", "status", "detail", "at"],
            select(
                finished.c.id,
                bindparam("j_status", type_=j.status.type),
                bindparam("j_detail", type_=j.detail.type),
                bindparam("j_at", type_=j.at.type),
            ),
        )
        .returning(j.id)
        .cte("journaled")
    )
    e = _events.c
    columns = ("uuid", "type", "severity", "device_id", "user_id", "body", "created_at", "delivery_attempts")
    evented = (
        insert(_events)
        .from_select(
            list(columns),
            select(*(bindparam(f"e_{c}", type_=e[c].type) for c in columns)).select_from(finished),
        )
        .returning(e.id)
        .cte("evented")
    )
    return select(taken.c.command_id).add_cte(journaled, evented)


_TAKE_AND_FINISH_PG = _take_and_finish_pg()


async def take_and_finish(
    session: AsyncSession,
    command: Command,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
) -> bool:
    """``take_in_flight``, then (only if it was in flight) ``finish_command``, the journal entry
    ``journal`` (status, detail) and the outbox row ``event``; False when nothing was in flight
    (nothing written). PostgreSQL: one statement; SQLite: one each."""
    if session.get_bind().dialect.name != "postgresql":
        if not await take_in_flight(session, command.id):
            return False
        await finish_command(session, command, values)
        await insert_journal(session, command.id, *journal)
        await insert_event(session, event)
        return True
    await flush_pending(session)
    params = {f"b_{name}": values[name] for name in FINISH_COLUMNS}
    params.update(b_id=command.id, j_status=journal[0], j_detail=journal[1], j_at=values["finished_at"])
    params.update({f"e_{key}": value for key, value in event.items()})
    if (await session.execute(_TAKE_AND_FINISH_PG, params)).first() is None:
        return False
    for key, value in values.items():
        set_committed_value(command, key, value)
    return True


async def finish_command(session: AsyncSession, command: Command, values: dict[str, Any]) -> None:
    """Write the ``FINISH_COLUMNS`` in ``values`` to the command's row with one Core UPDATE by id
    and show them on the object as committed (nothing left for a flush)."""
    params = {f"b_{name}": values[name] for name in FINISH_COLUMNS}
    params["b_id"] = command.id
    await session.execute(_FINISH, params)
    for key, value in values.items():
        set_committed_value(command, key, value)


async def active_of_type(session: AsyncSession, device_id: int, type_: str) -> Command | None:
    return await session.scalar(
        select(Command).where(
            Command.device_id == device_id, Command.type == type_, Command.active.is_(True)
        )
    )


async def insert_unless_active(session: AsyncSession, values: dict[str, Any]) -> Command | None:
    """INSERT a command and queue it; None (nothing written) when the device already has an
    active command of that type (the partial unique index ``uq_commands_one_active_type``): one
    statement instead of a look-up, a savepoint and a flush that may fail."""
    insert_for = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert_for(Command)
        .values(values)
        .on_conflict_do_nothing(index_elements=["device_id", "type"], index_where=text("active"))
        .returning(Command.id)
    )
    command_id = await session.scalar(stmt)
    if command_id is None:
        return None
    command = Command(id=command_id, **values)
    # The row exists: attach the object as persistent (no read-back, nothing dirty).
    make_transient_to_detached(command)
    session.add(command)
    session.add(
        CommandQueueEntry(
            command_id=command_id,
            device_id=values["device_id"],
            priority=values["priority"],
            created_at=values["created_at"],
        )
    )
    return command


async def by_guid(session: AsyncSession, guid: str, *, for_update: bool = False) -> Command | None:
    stmt = select(Command).where(Command.guid == guid)
    if for_update:
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


async def queue_entry(session: AsyncSession, command_id: int) -> CommandQueueEntry | None:
    return await session.get(CommandQueueEntry, command_id)


async def delete_queue_entry(session: AsyncSession, entry: CommandQueueEntry) -> None:
    await session.delete(entry)


async def dequeue(session: AsyncSession, command_id: int) -> None:
    await session.execute(delete(CommandQueueEntry).where(CommandQueueEntry.command_id == command_id))


async def release_step(session: AsyncSession, command_id: int) -> None:
    """A step was answered: the command is offered again (its next step) at the next poll."""
    await session.execute(
        update(CommandQueueEntry)
        .where(CommandQueueEntry.command_id == command_id)
        .values(in_flight=False, not_before=None)
    )


async def next_command(session: AsyncSession, device_id: int, *, skip: Sequence[int] = ()) -> Command | None:
    now = utcnow()
    stmt = (
        select(Command)
        .join(CommandQueueEntry, CommandQueueEntry.command_id == Command.id)
        .where(
            CommandQueueEntry.device_id == device_id,
            Command.status == CommandStatus.PROCESSING.value,
            or_(CommandQueueEntry.not_before.is_(None), CommandQueueEntry.not_before <= now),
        )
        .order_by(CommandQueueEntry.priority.desc(), CommandQueueEntry.command_id)
        .limit(1)
    )
    if skip:
        stmt = stmt.where(CommandQueueEntry.command_id.not_in(skip))
    return await session.scalar(stmt)


async def claim(session: AsyncSession, command_id: int) -> Command | None:
    row = (await session.execute(_CLAIM, {"b_id": command_id, "b_now": utcnow()})).first()
    return None if row is None else _attach(session, row._asdict())


async def claim_next(
    session: AsyncSession, device_id: int, *, ready_only: bool
) -> tuple[bool, Command | None]:
    """``claim`` of the device's next deliverable command, found and claimed in one statement:
    (whether a command was found, the claimed command). Found but not claimed: a concurrent
    request claimed it first (PostgreSQL), look again."""
    params = {"b_device": device_id, "b_now": utcnow()}
    if session.get_bind().dialect.name == "postgresql":
        row = (await session.execute(_CLAIM_NEXT_PG[ready_only], params)).first()
        if row is None:
            return False, None
        values = row._asdict()
        del values["b_found"]
        return True, None if values["id"] is None else _attach(session, values)
    claimed = (await session.execute(_CLAIM_NEXT_SQLITE[ready_only], params)).first()
    return claimed is not None, None if claimed is None else _attach(session, claimed._asdict())


async def lock_by_guid(session: AsyncSession, guid: str) -> Command | None:
    row = (await session.execute(_BY_GUID_LOCKED, {"b_guid": guid})).first()
    return None if row is None else _attach(session, row._asdict())


_MAPPER = Command.__mapper__


def _attach(session: AsyncSession, values: dict[str, Any]) -> Command:
    """An ORM object for a row a Core statement just read or wrote, without reading it again;
    later attribute changes are flushed as usual. Built as the ORM's own loading does (the
    values straight into the instance's dict, as committed): a constructor and ``merge`` cost
    twice as much."""
    key = _MAPPER.identity_key_from_primary_key((values["id"],))
    if key in session.identity_map:  # already in this session: refresh it through merge
        detached = Command(**values)
        make_transient_to_detached(detached)
        return session.sync_session.merge(detached, load=False)
    command: Command = _MAPPER.class_manager.new_instance()
    command.__dict__.update(values)
    instance_state(command).key = key
    session.add(command)
    return command


async def set_in_flight(session: AsyncSession, command_id: int) -> None:
    await session.execute(_SET_IN_FLIGHT, {"b_id": command_id})


async def take_in_flight(session: AsyncSession, command_id: int) -> bool:
    taken = await session.execute(_TAKE_IN_FLIGHT, {"b_id": command_id})
    return taken.first() is not None


async def journal_of(session: AsyncSession, command_id: int) -> list[CommandJournalEntry]:
    rows = await session.scalars(
        select(CommandJournalEntry)
        .where(CommandJournalEntry.command_id == command_id)
        .order_by(CommandJournalEntry.id)
    )
    return list(rows.all())


async def command_log(
    session: AsyncSession, device_id: int, *, limit: int, before_id: int | None = None
) -> list[tuple[Command, list[CommandJournalEntry]]]:
    stmt = select(Command).where(Command.device_id == device_id)
    if before_id is not None:
        stmt = stmt.where(Command.id < before_id)
    commands = list((await session.scalars(stmt.order_by(Command.id.desc()).limit(limit))).all())
    if not commands:
        return []
    rows = await session.scalars(
        select(CommandJournalEntry)
        .where(CommandJournalEntry.command_id.in_([c.id for c in commands]))
        .order_by(CommandJournalEntry.id)
    )
    by_command: dict[int, list[CommandJournalEntry]] = {c.id: [] for c in commands}
    for row in rows:
        by_command[row.command_id].append(row)
    return [(c, by_command[c.id]) for c in commands]


async def active_count(session: AsyncSession, device_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Command)
            .where(Command.device_id == device_id, Command.active.is_(True))
        )
        or 0
    )


async def queue_depth(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(CommandQueueEntry)) or 0)
