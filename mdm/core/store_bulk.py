"""Every SQL statement of bulk operations (``mdm.core.bulk``): the operation row, its targets, the
set-based statements of one batch (commands by INSERT ... SELECT ... ON CONFLICT DO NOTHING with
GUIDs made by the database, their queue rows, journal rows and ``commands_created`` event by
INSERT ... SELECT), the recall and the counts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import (
    BulkOperation,
    BulkSkipped,
    BulkState,
    BulkTarget,
    BulkTargetDevice,
    Command,
    CommandJournalEntry,
    CommandQueueEntry,
    CommandStatus,
    Device,
    Event,
)

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_devices = cast(Table, Device.__table__)
_targets = cast(Table, BulkTargetDevice.__table__)
_skipped = cast(Table, BulkSkipped.__table__)
_ops = cast(Table, BulkOperation.__table__)
_events = cast(Table, Event.__table__)
# An outbox row's columns but its body (``mdm.core.events.event_values``).
EVENT_HEAD = ("uuid", "type", "severity", "device_id", "user_id", "created_at", "delivery_attempts")


# One target of a batch: id, protocol (None for a listed id that names no device), os_name,
# model, attributes (None unless asked for).
TargetRow = tuple[int, int | None, str | None, str | None, dict[str, Any] | None]


class Created(NamedTuple):
    id: int
    device_id: int
    guid: str


# ---- the operation ------------------------------------------------------------------------------
async def max_device_id(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.max(_devices.c.id))) or 0)


async def count_devices(session: AsyncSession, max_id: int, group_ids: Sequence[int] | None) -> int:
    stmt = select(func.count()).select_from(_devices).where(_devices.c.id <= max_id)
    if group_ids is not None:
        stmt = stmt.where(_devices.c.group_id.in_(group_ids))
    return int(await session.scalar(stmt) or 0)


async def count_known(session: AsyncSession, ids: Sequence[int]) -> int:
    return int(await session.scalar(select(func.count()).where(_devices.c.id.in_(ids))) or 0)


async def add_operation(session: AsyncSession, op: BulkOperation, device_ids: Sequence[int]) -> BulkOperation:
    session.add(op)
    await session.flush()
    if device_ids:
        await session.execute(insert(_targets), [{"bulk_id": op.id, "device_id": i} for i in device_ids])
    return op


async def get(session: AsyncSession, bulk_id: int, *, for_update: bool = False) -> BulkOperation | None:
    stmt = select(BulkOperation).where(BulkOperation.id == bulk_id)
    if for_update:
        stmt = stmt.with_for_update()
    return await session.scalar(stmt.execution_options(populate_existing=True))


async def unfinished(session: AsyncSession) -> list[int]:
    """Operations a worker must carry on: still queuing, or recalling."""
    states = (BulkState.QUEUING.value, BulkState.RECALLING.value)
    return list((await session.scalars(
        select(_ops.c.id).where(_ops.c.state.in_(states)).order_by(_ops.c.id)
    )).all())


async def page(session: AsyncSession, *, limit: int, before_id: int | None) -> list[BulkOperation]:
    stmt = select(BulkOperation).order_by(BulkOperation.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(BulkOperation.id < before_id)
    return list((await session.scalars(stmt)).all())


async def add_woken(session: AsyncSession, counts: Mapping[int, int]) -> None:
    for bulk_id, n in counts.items():
        await session.execute(update(_ops).where(_ops.c.id == bulk_id).values(woken=_ops.c.woken + n))


# ---- one batch ----------------------------------------------------------------------------------
async def batch_targets(
    session: AsyncSession, op: BulkOperation, limit: int, *, attributes: bool
) -> list[TargetRow]:
    """The next ``limit`` targets after the cursor, in ascending device id: a few columns, plain
    tuples (no ORM, no object per row)."""
    d = _devices.c
    attrs = d.attributes if attributes else literal(None).label("attributes")
    if op.target == BulkTarget.DEVICES:
        t = _targets.c
        stmt = (
            select(t.device_id, d.protocol, d.os_name, d.model, attrs)
            .select_from(_targets.outerjoin(_devices, d.id == t.device_id))
            .where(t.bulk_id == op.id, t.device_id > op.cursor)
            .order_by(t.device_id)
        )
    else:
        stmt = (
            select(d.id, d.protocol, d.os_name, d.model, attrs)
            .where(d.id > op.cursor, d.id <= op.max_device_id)
            .order_by(d.id)
        )
        if op.target == BulkTarget.GROUP:
            stmt = stmt.where(d.group_id.in_(op.group_ids or []))
    return cast(list[TargetRow], list((await session.execute(stmt.limit(limit))).all()))


async def last_command_id(session: AsyncSession) -> int:
    """The highest command id so far: the rows a batch writes after this read have higher ids
    (SQLite: ``AUTOINCREMENT`` under the one writer; PostgreSQL: a sequence only grows)."""
    return int(await session.scalar(select(func.max(_commands.c.id))) or 0)


async def insert_commands(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Multi-row INSERT (SQLAlchemy's insertmanyvalues) of commands translated one by one; a
    device that already has an active command of the type (``uq_commands_one_active_type``) gets
    nothing. How many were written."""
    if not rows:
        return 0
    insert_for = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert_for(_commands)
        .on_conflict_do_nothing(index_elements=["device_id", "type"], index_where=text("active"))
        .returning(_commands.c.id)
    )
    return len((await session.execute(stmt, list(rows))).all())


def _uuid7_upper(dialect: str) -> Any:
    """An uppercase time-ordered UUID (RFC 9562 version 7) per row, made by the database: the
    batch's millisecond timestamp in the first 48 bits (bound once per statement as
    ``guid_head``, see ``guid_head``), then the version, 74 random bits and the variant. Random
    (version 4) GUIDs put every new row of the unique index on a random page: at 10^6 commands
    those page writes were most of the queuing time; these land at the end of the index, like the
    ids."""
    head = bindparam("guid_head", type_=String)
    if dialect == "postgresql":
        # gen_random_uuid()::text is 8-4-4-4-12 hex with the variant at position 20; from
        # position 16 on it is "xxx-Vxxx-xxxxxxxxxxxx": random bits and a valid variant.
        return func.upper(head + func.substr(sql_cast(func.gen_random_uuid(), String), 16, 21))

    # SQLite: each hex(randomblob()) is a fresh random string, so the pieces need not share one.
    def hexes(n: int) -> Any:
        return func.substr(func.hex(func.randomblob(16)), 1, n, type_=String)

    variant = func.substr("89AB", 1 + func.abs(func.random()) % 4, 1, type_=String)
    return head + hexes(3) + "-" + variant + hexes(3) + "-" + hexes(12)


def guid_head(now: datetime) -> str:
    """The first 15 characters of the batch's version-7 GUIDs: its millisecond timestamp."""
    stamp = f"{int(now.timestamp() * 1000) & (2**48 - 1):012X}"
    return f"{stamp[:8]}-{stamp[8:]}-7"


def ids_param(dialect: str, device_ids: Sequence[int]) -> Any:
    """The value of the ``ids`` parameter of ``_in_ids``."""
    return list(device_ids) if dialect == "postgresql" else json.dumps(list(device_ids))


def _in_ids(dialect: str, column: Any) -> Any:
    """``column`` is one of the ids bound as ONE parameter ``ids`` (a PostgreSQL array, a JSON
    array read by SQLite's ``json_each``): an IN list of 2,000 literals cost more to build and
    compile in SQLAlchemy than the INSERT cost the database."""
    if dialect == "postgresql":
        return column == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    listed = func.json_each(bindparam("ids", type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))


_FOR_DEVICES: dict[tuple[str, tuple[str, ...]], Any] = {}


def _rows_for_devices(dialect: str, columns: tuple[str, ...]) -> Any:
    """SELECT of the command rows for the listed devices: ``columns`` bound, then device_id and
    a version-7 GUID. The id range beside the list keeps PostgreSQL on the primary key (with the
    list alone it may scan the whole table for every batch); rows go in ascending device id, like
    every batch of every operation, so that two operations racing on PostgreSQL wait for each
    other instead of deadlocking."""
    d = _devices.c
    return select(
        *(bindparam(k, type_=_commands.c[k].type) for k in columns), d.id, _uuid7_upper(dialect)
    ).where(_in_ids(dialect, d.id), d.id.between(bindparam("lo"), bindparam("hi"))).order_by(d.id)


def _insert_for_devices(dialect: str, columns: tuple[str, ...]) -> Any:
    """The statement of ``insert_for_devices``, built once per engine and column set."""
    stmt = _FOR_DEVICES.get((dialect, columns))
    if stmt is None:
        insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = _FOR_DEVICES[(dialect, columns)] = (
            insert_for(_commands)
            .from_select([*columns, "device_id", "guid"], _rows_for_devices(dialect, columns))
            .on_conflict_do_nothing(index_elements=["device_id", "type"], index_where=text("active"))
        )
    return stmt


def _params(dialect: str, values: Mapping[str, Any], device_ids: Sequence[int]) -> dict[str, Any]:
    return {**values, "ids": ids_param(dialect, device_ids), "lo": min(device_ids), "hi": max(device_ids),
            "guid_head": guid_head(values["created_at"])}


async def insert_for_devices(session: AsyncSession, values: dict[str, Any], device_ids: Sequence[int]) -> int:
    """The same command (``values``: every column but id, guid and device_id) for these devices,
    by one INSERT ... SELECT with GUIDs made by the database: nothing per row crosses from Python
    but the ids, in one parameter, and nothing comes back but the count. A device that already
    has an active command of the type gets nothing."""
    if not device_ids:
        return 0
    dialect = session.get_bind().dialect.name
    stmt = _insert_for_devices(dialect, tuple(values))
    result = await session.execute(stmt, _params(dialect, values, device_ids))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _journal_detail(c: Any, detail: str, no_handler: Sequence[int], no_handler_detail: str) -> Any:
    if not no_handler:
        return literal(detail)
    protocol = select(_devices.c.protocol).where(_devices.c.id == c.device_id).scalar_subquery()
    return case((protocol.in_(no_handler), literal(no_handler_detail)), else_=literal(detail))


def _event_body(dialect: str, c: Any, bulk_id: int, command_type: str) -> Any:
    """The ``commands_created`` body built by the database from the batch's rows (the catalog's
    fields, in its order): no Python object per command, no JSON encoding in this process."""
    if dialect == "postgresql":
        pairs = func.json_agg(aggregate_order_by(func.json_build_array(c.device_id, c.guid), c.id))
        return func.json_build_object(
            "bulk", literal(bulk_id, BigInteger), "command_type", literal(command_type, String),
            "count", func.count(), "commands", pairs,
        )
    # Rows come in primary-key order (the id range); SQLite 3.40 has no ORDER BY in aggregates.
    return func.json_object(
        "bulk", literal(bulk_id, BigInteger), "command_type", literal(command_type, String),
        "count", func.count(), "commands", func.json_group_array(func.json_array(c.device_id, c.guid)),
    )


async def queue_journal_event(
    session: AsyncSession, bulk_id: int, after_id: int, now: datetime, detail: str,
    event: Mapping[str, Any], no_handler: Sequence[int] = (), no_handler_detail: str = "",
) -> None:
    """The queue row and the first journal row of every command this batch wrote (ids above
    ``after_id`` of the operation: the operation row is locked, so they are this batch's own),
    and the batch's ``commands_created`` event (``event``: its outbox row but the body, from
    ``mdm.core.events.event_values``), each by one INSERT ... SELECT."""
    dialect = session.get_bind().dialect.name
    c = _commands.c
    # By the id range (the primary key); the operation is only a filter on it: through the index
    # on (bulk_id, status) every batch would read all the commands the operation has so far.
    mine = and_(c.id > after_id, func.coalesce(c.bulk_id, 0) == bulk_id)
    await session.execute(
        insert(_queue).from_select(
            ["command_id", "device_id", "priority", "created_at", "not_before", "in_flight", "not_now_count"],
            select(c.id, c.device_id, c.priority, c.created_at, literal(None), literal(False), literal(0))
            .where(mine),
        )
    )
    shown = _journal_detail(c, detail, no_handler, no_handler_detail)
    await session.execute(
        insert(_journal).from_select(
            ["command_id", "at", "status", "detail"],
            select(c.id, literal(now, _journal.c.at.type), literal(CommandStatus.PROCESSING.value), shown)
            .where(mine),
        )
    )
    await session.execute(insert(_events).from_select(
        [*EVENT_HEAD, "body"],
        select(*(literal(event[k], _events.c[k].type) for k in EVENT_HEAD),
               _event_body(dialect, c, bulk_id, str(event["body"]["command_type"]))).where(mine),
    ))


async def created_devices(session: AsyncSession, bulk_id: int, after_id: int) -> list[int]:
    """The devices that got a command of the operation above ``after_id`` (a batch some of
    whose devices already had an active command of the type)."""
    c = _commands.c
    stmt = select(c.device_id).where(c.id > after_id, func.coalesce(c.bulk_id, 0) == bulk_id)
    return list((await session.scalars(stmt)).all())


async def add_skipped(session: AsyncSession, bulk_id: int, skipped: Sequence[tuple[int, str]]) -> None:
    if skipped:
        await session.execute(
            insert(_skipped), [{"bulk_id": bulk_id, "device_id": d, "reason": r} for d, r in skipped]
        )


# ---- recall -------------------------------------------------------------------------------------
async def recall_batch(
    session: AsyncSession, bulk_id: int, limit: int, now: datetime, detail: str
) -> list[Created]:
    """Remove up to ``limit`` commands of the operation that are queued and were never delivered:
    status removed, queue row deleted, journal "removed". ``delivered_at IS NULL`` is re-checked on
    the row itself, so a command a device claims meanwhile is left to finish."""
    c, q = _commands.c, _queue.c
    candidates = (
        select(c.id)
        .join(_queue, q.command_id == c.id)
        .where(c.bulk_id == bulk_id, c.status == CommandStatus.PROCESSING.value,
               c.delivered_at.is_(None), q.in_flight.is_(False))
        .order_by(c.id)
        .limit(limit)
    )
    ids = list((await session.scalars(candidates)).all())
    if not ids:
        return []
    result = await session.execute(
        update(_commands)
        .where(c.id.in_(ids), c.status == CommandStatus.PROCESSING.value, c.delivered_at.is_(None))
        .values(status=CommandStatus.REMOVED.value, active=None, payload={}, finished_at=now,
                updated_at=now)
        .returning(c.id, c.device_id, c.guid)
    )
    removed = [Created(*r) for r in result.all()]
    done = [r.id for r in removed]
    if done:
        await session.execute(delete(_queue).where(q.command_id.in_(done)))
        await session.execute(
            insert(_journal),
            [{"command_id": i, "at": now, "status": CommandStatus.REMOVED.value, "detail": detail}
             for i in done],
        )
    return removed


# ---- reading ------------------------------------------------------------------------------------
async def status_counts(session: AsyncSession, bulk_id: int) -> tuple[dict[str, int], int]:
    """({status: count}, how many were delivered at least once) of the operation's commands."""
    c = _commands.c
    rows = (await session.execute(
        select(c.status, func.count(), func.count(c.delivered_at))
        .where(c.bulk_id == bulk_id).group_by(c.status)
    )).all()
    return {r[0]: int(r[1]) for r in rows}, sum(int(r[2]) for r in rows)


async def skipped_page(
    session: AsyncSession, bulk_id: int, *, after: int, limit: int
) -> list[tuple[int, str]]:
    s = _skipped.c
    rows = (await session.execute(
        select(s.device_id, s.reason).where(s.bulk_id == bulk_id, s.device_id > after)
        .order_by(s.device_id).limit(limit)
    )).all()
    return [(int(r[0]), str(r[1])) for r in rows]
