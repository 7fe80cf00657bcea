"""Every SQL statement of bulk operations (``mdm.core.bulk``): the operation row, its targets, the
set-based statements of one batch (commands by a multi-row INSERT ... ON CONFLICT DO NOTHING
RETURNING, their queue and journal rows by INSERT ... SELECT), the recall and the counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import String, Table, and_, case, delete, func, insert, literal, select, text, update
from sqlalchemy import cast as sql_cast
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
)

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_devices = cast(Table, Device.__table__)
_targets = cast(Table, BulkTargetDevice.__table__)
_skipped = cast(Table, BulkSkipped.__table__)
_ops = cast(Table, BulkOperation.__table__)


class TargetRow(NamedTuple):
    """One target of a batch; ``protocol`` is None for a listed id that names no device."""

    id: int
    protocol: int | None
    os_name: str | None
    model: str | None
    attributes: dict[str, Any] | None


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
    """The next ``limit`` targets after the cursor, in ascending device id: a few columns, no ORM."""
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
    rows = (await session.execute(stmt.limit(limit))).all()
    return [TargetRow(*r) for r in rows]


async def insert_commands(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[Created]:
    """Multi-row INSERT (SQLAlchemy's insertmanyvalues); a device that already has an active
    command of the type (``uq_commands_one_active_type``) gets nothing and is not returned."""
    if not rows:
        return []
    insert_for = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert_for(_commands)
        .on_conflict_do_nothing(index_elements=["device_id", "type"], index_where=text("active"))
        .returning(_commands.c.id, _commands.c.device_id, _commands.c.guid)
    )
    result = await session.execute(stmt, list(rows))
    return [Created(*r) for r in result.all()]


def _uuid7_upper(dialect: str, now: datetime) -> Any:
    """An uppercase time-ordered UUID (RFC 9562 version 7) per row, made by the database: the
    batch's millisecond timestamp in the first 48 bits (bound once per statement), then the
    version, 74 random bits and the variant. Random (version 4) GUIDs put every new row of the
    unique index on a random page: at 10^6 commands those page writes were most of the queuing
    time; these land at the end of the index, like the ids."""
    stamp = f"{int(now.timestamp() * 1000) & (2**48 - 1):012X}"
    head = literal(f"{stamp[:8]}-{stamp[8:]}-7", String)
    if dialect == "postgresql":
        # gen_random_uuid()::text is 8-4-4-4-12 hex with the variant at position 20; from
        # position 16 on it is "xxx-Vxxx-xxxxxxxxxxxx": random bits and a valid variant.
        return func.upper(head + func.substr(sql_cast(func.gen_random_uuid(), String), 16, 21))

    # SQLite: each hex(randomblob()) is a fresh random string, so the pieces need not share one.
    def hexes(n: int) -> Any:
        return func.substr(func.hex(func.randomblob(16)), 1, n, type_=String)

    variant = func.substr("89AB", 1 + func.abs(func.random()) % 4, 1, type_=String)
    return head + hexes(3) + "-" + variant + hexes(3) + "-" + hexes(12)


async def insert_for_devices(
    session: AsyncSession, values: dict[str, Any], device_ids: Sequence[int]
) -> list[Created]:
    """The same command (``values``: every column but id, guid and device_id) for these devices,
    by one INSERT ... SELECT with GUIDs made by the database: nothing per row crosses from Python
    but the ids. A device that already has an active command of the type gets nothing. The id range
    beside the list keeps PostgreSQL on the primary key (with the list alone it may scan the whole
    table for every batch). Rows go in ascending device id, like every batch of every operation, so
    that two operations racing on PostgreSQL wait for each other instead of deadlocking."""
    if not device_ids:
        return []
    dialect = session.get_bind().dialect.name
    insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
    d = _devices.c
    columns = list(values)
    guid = _uuid7_upper(dialect, values["created_at"])
    rows = select(
        *(literal(values[k], _commands.c[k].type) for k in columns), d.id, guid
    ).where(d.id.in_(list(device_ids)), d.id.between(min(device_ids), max(device_ids))).order_by(d.id)
    stmt = (
        insert_for(_commands)
        .from_select([*columns, "device_id", "guid"], rows)
        .on_conflict_do_nothing(index_elements=["device_id", "type"], index_where=text("active"))
        .returning(_commands.c.id, _commands.c.device_id, _commands.c.guid)
    )
    result = await session.execute(stmt)
    return [Created(*r) for r in result.all()]


async def queue_and_journal(
    session: AsyncSession, bulk_id: int, lo: int, hi: int, now: datetime, detail: str,
    no_handler: Sequence[int] = (), no_handler_detail: str = "",
) -> None:
    """The queue row and the first journal row of every command this batch wrote (ids lo..hi of
    the operation: the operation row is locked, so they are this batch's own)."""
    c = _commands.c
    # By the id range (the primary key); the operation is only a filter on it: through the index
    # on (bulk_id, status) every batch would read all the commands the operation has so far.
    mine = and_(c.id >= lo, c.id <= hi, func.coalesce(c.bulk_id, 0) == bulk_id)
    await session.execute(
        insert(_queue).from_select(
            ["command_id", "device_id", "priority", "created_at", "not_before", "in_flight", "not_now_count"],
            select(c.id, c.device_id, c.priority, c.created_at, literal(None), literal(False), literal(0))
            .where(mine),
        )
    )
    if no_handler:
        protocol = select(_devices.c.protocol).where(_devices.c.id == c.device_id).scalar_subquery()
        shown: Any = case((protocol.in_(no_handler), literal(no_handler_detail)), else_=literal(detail))
    else:
        shown = literal(detail)
    await session.execute(
        insert(_journal).from_select(
            ["command_id", "at", "status", "detail"],
            select(c.id, literal(now, _journal.c.at.type), literal(CommandStatus.PROCESSING.value), shown)
            .where(mine),
        )
    )


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
