"""The writes of one batch of a bulk operation (``mdm.core.bulk_queue``): the commands by
INSERT ... SELECT ... ON CONFLICT DO NOTHING with GUIDs made by the database (the batch's device
ids in one parameter), then their queue rows, journal rows and the batch's ``commands_created``
event by INSERT ... SELECT, the event's body built by the database. On PostgreSQL a batch of one
variant is all of that in ONE statement (data-modifying CTEs). Nothing per command comes back to
Python but, where asked, the ids of the devices that got one."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, CommandStatus, Device, Event

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_devices = cast(Table, Device.__table__)
_events = cast(Table, Event.__table__)
# An outbox row's columns but its body (``mdm.core.events.event_values``).
EVENT_HEAD = ("uuid", "type", "severity", "device_id", "user_id", "created_at", "delivery_attempts")
QUEUE_COLUMNS = (
    "command_id", "device_id", "priority", "created_at", "not_before", "in_flight", "not_now_count"
)
JOURNAL_COLUMNS = ("command_id", "at", "status", "detail")


def one_statement(session: AsyncSession) -> bool:
    """Whether ``write_variant`` can do a batch of one variant in one statement (PostgreSQL)."""
    return session.get_bind().dialect.name == "postgresql"


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

    # SQLite: three draws of its 64-bit PRNG, masked to 12, 14 and 48 bits (the 14 after the
    # variant bits "10"), formatted by one printf: a third of the cost of hex(randomblob()) pieces.
    return func.printf(
        "%s%03X-%04X-%012X", head, func.random().op("&")(0xFFF),
        literal_column("32768").op("|")(func.random().op("&")(0x3FFF)),
        func.random().op("&")(0xFFFFFFFFFFFF), type_=String,
    )


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
    session: AsyncSession, bulk_id: int, ids: tuple[int, int], now: datetime, detail: str,
    event: Mapping[str, Any], no_handler: Sequence[int] = (), no_handler_detail: str = "",
) -> None:
    """The queue row and the first journal row of every command this batch wrote (``ids``: the
    highest command id before and after its INSERTs; the operation row is locked, so the
    operation's commands in that range are this batch's own),
    and the batch's ``commands_created`` event (``event``: its outbox row but the body, from
    ``mdm.core.events.event_values``), each by one INSERT ... SELECT."""
    dialect = session.get_bind().dialect.name
    c = _commands.c
    # By the id range (the primary key); the operation is only a filter on it: through the index
    # on (bulk_id, status) every batch would read all the commands the operation has so far.
    mine = _mine(bulk_id, ids)
    await session.execute(
        insert(_queue).from_select(
            QUEUE_COLUMNS,
            select(c.id, c.device_id, c.priority, c.created_at, literal(None), literal(False), literal(0))
            .where(mine),
        )
    )
    shown = _journal_detail(c, detail, no_handler, no_handler_detail)
    await session.execute(
        insert(_journal).from_select(
            JOURNAL_COLUMNS,
            select(c.id, literal(now, _journal.c.at.type), literal(CommandStatus.PROCESSING.value), shown)
            .where(mine),
        )
    )
    await session.execute(insert(_events).from_select(
        [*EVENT_HEAD, "body"],
        select(*(literal(event[k], _events.c[k].type) for k in EVENT_HEAD),
               _event_body(dialect, c, bulk_id, str(event["body"]["command_type"]))).where(mine),
    ))


async def created_devices(session: AsyncSession, bulk_id: int, ids: tuple[int, int]) -> list[int]:
    """The devices that got a command of the operation with an id in ``ids`` (a batch some of
    whose devices already had an active command of the type)."""
    stmt = select(_commands.c.device_id).where(_mine(bulk_id, ids))
    return list((await session.scalars(stmt)).all())


def _mine(bulk_id: int, ids: tuple[int, int]) -> Any:
    """The operation's commands with an id above ``ids[0]`` and at most ``ids[1]`` (the highest
    before and after the batch's INSERTs): a closed range of the primary key. Open-ended (above
    the first alone), PostgreSQL with statistics from before the bulk load planned a scan of the
    whole table per batch (measured: 2 s per batch at the end of 10^6)."""
    c = _commands.c
    return and_(c.id > ids[0], c.id <= ids[1], func.coalesce(c.bulk_id, 0) == bulk_id)


async def write_variant(
    session: AsyncSession, values: dict[str, Any], device_ids: Sequence[int], detail: str,
    event: Mapping[str, Any], no_handler: Sequence[int] = (), no_handler_detail: str = "",
) -> list[int]:
    """PostgreSQL, a batch of one variant: the commands (as ``insert_for_devices``), their queue
    and journal rows and the ``commands_created`` event (as ``queue_journal_event``) in ONE
    statement, one round trip; the devices that got a command."""
    columns = tuple(values)
    ins = (
        pg_insert(_commands)
        .from_select([*columns, "device_id", "guid"], _rows_for_devices("postgresql", columns))
        .on_conflict_do_nothing(index_elements=["device_id", "type"], index_where=text("active"))
        .returning(_commands.c.id, _commands.c.device_id, _commands.c.guid, _commands.c.priority,
                   _commands.c.created_at)
        .cte("ins")
    )
    c = ins.c
    queue = insert(_queue).from_select(
        QUEUE_COLUMNS,
        select(c.id, c.device_id, c.priority, c.created_at, literal(None), literal(False), literal(0)),
    ).cte("q")
    journal = insert(_journal).from_select(
        JOURNAL_COLUMNS,
        select(c.id, literal(values["created_at"], _journal.c.at.type),
               literal(CommandStatus.PROCESSING.value),
               _journal_detail(c, detail, no_handler, no_handler_detail)),
    ).cte("j")
    outbox = insert(_events).from_select(
        [*EVENT_HEAD, "body"],
        select(*(literal(event[k], _events.c[k].type) for k in EVENT_HEAD),
               _event_body("postgresql", c, int(event["body"]["bulk"]), str(event["body"]["command_type"])))
        .having(func.count() > 0),
    ).cte("e")
    stmt = select(func.array_agg(c.device_id)).add_cte(queue, journal, outbox)
    got = await session.scalar(stmt, _params("postgresql", values, device_ids))
    return list(got or [])
