"""Every SQL statement of the command life cycle (``mdm.core.commands``): the queue, the journal
and the command log. The delivery path's statements (claim; in flight, take and finish in
``store_delivery``) are built once against the tables: plain Core, no ORM bulk-update
machinery, compiled-statement cache hits; parameters are bound by name at execution."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, delete, func, literal, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state

from mdm.core.store_delivery import FINISH_COLUMNS as FINISH_COLUMNS
from mdm.core.store_delivery import drained as drained
from mdm.core.store_delivery import finish_command as finish_command
from mdm.core.store_delivery import insert_journal as insert_journal
from mdm.core.store_delivery import mark_delivered as mark_delivered
from mdm.core.store_delivery import set_in_flight as set_in_flight
from mdm.core.store_delivery import take_and_finish as take_and_finish
from mdm.core.store_delivery import take_in_flight as take_in_flight
from mdm.core.store_queue_order import next_queued
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, CommandStatus, utcnow
from mdm.db.prepared import Prepared

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)

_CLAIM = Prepared(
    update(_commands)
    .where(_commands.c.id == bindparam("b_id"), _commands.c.status == CommandStatus.PROCESSING.value)
    .values(
        attempts=_commands.c.attempts + 1,
        delivered_at=func.coalesce(_commands.c.delivered_at, bindparam("b_now")),
        updated_at=bindparam("b_now"),
    )
    .returning(*_commands.c)
)


def _next_id(ready_only: bool) -> Select[int]:
    """The device's next deliverable command: priority, then age; ``ready_only``: not deferred
    by a NotNow (later in an exchange)."""
    q = _queue.c
    stmt = next_queued(bindparam("b_device"))
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
    ready: Prepared(
        update(_commands)
    .where(
        _commands.c.id == _next_id(ready).scalar_subquery(),
        _commands.c.status == CommandStatus.PROCESSING.value,
    )
        .values(_CLAIM_VALUES)
        .returning(*_commands.c)
    )
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


_CLAIM_NEXT_PG = {ready: Prepared(_claim_next_pg(ready)) for ready in (False, True)}
_BY_GUID_LOCKED = Prepared(
    select(*_commands.c).where(_commands.c.guid == bindparam("b_guid")).with_for_update()
)
def add_journal(
    session: AsyncSession, command_id: int, status: str, detail: str | None = None
) -> CommandJournalEntry:
    entry = CommandJournalEntry(command_id=command_id, status=status, detail=detail, at=utcnow())
    session.add(entry)
    return entry


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


def queue_row(
    session: AsyncSession, command_id: int, device_id: int, priority: int, created_at: datetime
) -> None:
    """Queue a command written by a Core statement: an ORM object, flushed with whatever else the
    session holds (its insert listeners clear the queue-empty hints, ``mdm.core.queue_hint``)."""
    session.add(CommandQueueEntry(
        command_id=command_id, device_id=device_id, priority=priority, created_at=created_at,
        not_before=None, in_flight=False, not_now_count=0,
    ))


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
    q = _queue.c
    found = next_queued(literal(device_id)).where(or_(q.not_before.is_(None), q.not_before <= utcnow()))
    if skip:
        found = found.where(q.command_id.not_in(skip))
    return await session.scalar(select(Command).where(Command.id == found.scalar_subquery()))


async def claim(session: AsyncSession, command_id: int) -> Command | None:
    rows = await _CLAIM.mappings(session, {"b_id": command_id, "b_now": utcnow()})
    return _attach(session, rows[0]) if rows else None


async def claim_next(
    session: AsyncSession, device_id: int, *, ready_only: bool
) -> tuple[bool, Command | None]:
    """``claim`` of the device's next deliverable command, found and claimed in one statement:
    (whether a command was found, the claimed command). Found but not claimed: a concurrent
    request claimed it first (PostgreSQL), look again."""
    params = {"b_device": device_id, "b_now": utcnow()}
    if session.get_bind().dialect.name == "postgresql":
        rows = await _CLAIM_NEXT_PG[ready_only].mappings(session, params)
        if not rows:
            return False, None
        values = rows[0]
        del values["b_found"]
        return True, None if values["id"] is None else _attach(session, values)
    claimed = await _CLAIM_NEXT_SQLITE[ready_only].mappings(session, params)
    return bool(claimed), _attach(session, claimed[0]) if claimed else None


async def lock_by_guid(session: AsyncSession, guid: str) -> Command | None:
    rows = await _BY_GUID_LOCKED.mappings(session, {"b_guid": guid})
    return _attach(session, rows[0]) if rows else None


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
