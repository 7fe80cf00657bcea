"""The SQL statements of bulk operations (``mdm.core.bulk``): the operation row, the targets of a
batch, its skipped rows, the recall and the counts. The writes of a batch are in
``store_bulk_batch``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, delete, func, insert, literal, select, update
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


async def add_woken(
    session: AsyncSession, counts: Mapping[int, int], *, skip_locked: bool = False
) -> dict[int, int]:
    """Add accepted wake-ups to the operations' ``woken``; the counts not added. ``skip_locked``
    (PostgreSQL): an operation whose row another transaction holds (its batch in progress) is
    left out instead of waited for."""
    left: dict[int, int] = {}
    for bulk_id, n in counts.items():
        stmt = update(_ops).values(woken=_ops.c.woken + n)
        if skip_locked:  # (FOR NO KEY UPDATE: the lock the UPDATE itself would take)
            free = select(_ops.c.id).where(_ops.c.id == bulk_id)
            free = free.with_for_update(key_share=True, skip_locked=True)
            stmt = stmt.where(_ops.c.id.in_(free.scalar_subquery())).returning(_ops.c.id)
            if (await session.execute(stmt)).first() is None and await session.scalar(
                select(_ops.c.id).where(_ops.c.id == bulk_id)
            ) is not None:  # locked, not gone
                left[bulk_id] = n
        else:
            await session.execute(stmt.where(_ops.c.id == bulk_id))
    return left


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


async def add_skipped(session: AsyncSession, bulk_id: int, skipped: Sequence[tuple[int, str]]) -> None:
    if skipped:
        await session.execute(
            insert(_skipped), [{"bulk_id": bulk_id, "device_id": d, "reason": r} for d, r in skipped]
        )


# ---- recall -------------------------------------------------------------------------------------
class Recalled(NamedTuple):
    removed: list[Created]
    last_id: int | None  # the last candidate read (the next batch starts after it); None: none left
    more: bool  # a whole batch of candidates was read: there may be more


async def recall_batch(
    session: AsyncSession, bulk_id: int, limit: int, now: datetime, detail: str, after: int = 0
) -> Recalled:
    """Remove up to ``limit`` commands of the operation, with ids above ``after``, that are queued
    and were never delivered: status removed, queue row deleted, journal "removed".
    ``delivered_at IS NULL`` is re-checked on the row itself, so a command a device claims
    meanwhile is left to finish. ``after`` is the previous batch's ``last_id``: each batch walks on
    from where the last one stopped instead of from the operation's first command (on PostgreSQL,
    which orders by the primary key, a recall at 10^6 re-read every command already removed, per
    batch); a command passed over was delivered, which it stays."""
    c, q = _commands.c, _queue.c
    candidates = (
        select(c.id)
        .join(_queue, q.command_id == c.id)
        .where(c.bulk_id == bulk_id, c.status == CommandStatus.PROCESSING.value, c.id > after,
               c.delivered_at.is_(None), q.in_flight.is_(False))
        .order_by(c.id)
        .limit(limit)
    )
    ids = list((await session.scalars(candidates)).all())
    if not ids:
        return Recalled([], None, False)
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
    return Recalled(removed, ids[-1], len(ids) >= limit)


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
