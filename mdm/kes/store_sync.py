"""Every SQL statement of the KES sync: the device's agent state, its inventory and attributes,
the queue rows of its commands, the write-behind of the last sync, the end of a binding.
Hot statements are prebuilt Core statements with named parameters."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Table, Text, bindparam, func, or_, select, text, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql import Update

from mdm.core.device_status import set_status
from mdm.db import point_read
from mdm.db.models import Command, CommandQueueEntry, Device, DeviceStatus
from mdm.db.types import UtcDateTime
from mdm.kes.tables import KesDevice

_devices = cast(Table, Device.__table__)
_kes = cast(Table, KesDevice.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
d, k, q = _devices.c, _kes.c, _queue.c

STATE_COLUMNS = (
    k.device_id, k.agent_version, k.renew_requested_at, k.sync_interval, k.last_sync_at,
    k.policy_sent_version, k.policy_applied_version, k.last_request_id, k.last_request_hash,
    k.last_answer, d.group_id, d.status, d.cert_serial,
)
_STATE = select(*STATE_COLUMNS).select_from(_kes.join(_devices, d.id == k.device_id)).where(
    k.device_id == bindparam("b_id")
)
# The devices row: every transaction that takes a device's devices and kes_devices rows takes
# devices first (the identity paths, the last-sync flush), so they cannot deadlock.
_STATE_LOCKED = _STATE.with_for_update(of=_devices)
_SAVE = (
    update(_kes)
    .where(k.device_id == bindparam("b_id"))
    .values(
        last_request_id=bindparam("b_request_id"),
        last_request_hash=bindparam("b_hash"),
        last_answer=bindparam("b_answer", type_=JSON),
        last_sync_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
        policy_sent_version=bindparam("b_sent"),
        policy_applied_version=bindparam("b_applied"),
    )
)
_QUEUE_ROW = select(q.in_flight, q.not_before, q.device_id).where(q.command_id == bindparam("b_id"))
_REDELIVER_AFTER = (
    update(_queue)
    .where(q.command_id.in_(bindparam("b_ids", expanding=True)))
    .values(not_before=bindparam("b_at"))
)
_DELIVERABLE_ANY = (
    select(q.command_id)
    .where(q.device_id == bindparam("b_id"), or_(q.not_before.is_(None), q.not_before <= bindparam("b_now")))
    .limit(1)
)


def _last_sync(postgres: bool) -> tuple[Update, Update]:
    """The last-sync write of a chunk, one statement per table: ``UPDATE … FROM`` the chunk's
    (id, time) pairs, from two arrays (``unnest``, PostgreSQL) or one JSON array of pairs
    (``json_each``, SQLite), instead of an executemany of an UPDATE by key per device."""
    if postgres:
        chunk = func.unnest(
            bindparam("b_ids", type_=ARRAY(BigInteger)), bindparam("b_ats", type_=ARRAY(UtcDateTime()))
        ).table_valued("id", "at").render_derived(name="seen", with_types=False)
        ids, ats = chunk.c.id, chunk.c.at
    else:  # (the times as the column type writes them: ``write_last_sync``)
        pairs = func.json_each(bindparam("b_pairs", type_=Text)).table_valued("value")
        seen = select(func.json_extract(pairs.c.value, "$[0]").label("id"),
                      func.json_extract(pairs.c.value, "$[1]").label("at")).subquery("seen")
        ids, ats = seen.c.id, seen.c.at
    return (update(_devices).where(d.id == ids).values(last_seen_at=ats),
            update(_kes).where(k.device_id == ids).values(last_sync_at=ats))


_LAST_SYNC = {postgres: _last_sync(postgres) for postgres in (False, True)}


async def read_state(engine: AsyncEngine, device_id: int) -> dict[str, Any] | None:
    """The device's agent state outside a transaction (the idle sync's cache fill)."""
    row = await point_read.first(engine, _STATE, {"b_id": device_id})
    return None if row is None else row._asdict()


async def deliverable_any(engine: AsyncEngine, device_id: int, now: datetime) -> bool:
    """Whether the device has a queued command that may go out now (the idle sync's first look,
    outside a transaction)."""
    return await point_read.first(engine, _DELIVERABLE_ANY, {"b_id": device_id, "b_now": now}) is not None


async def device(session: AsyncSession, device_id: int) -> Device | None:
    return await session.get(Device, device_id)


async def lock_state(session: AsyncSession, device_id: int) -> dict[str, Any] | None:
    """The agent state, the device's ``devices`` row locked (PostgreSQL): syncs of one device run
    one after the other, so that a request id and a command are never handled twice."""
    row = (await session.execute(_STATE_LOCKED, {"b_id": device_id})).first()
    return None if row is None else row._asdict()


async def save_exchange(
    session: AsyncSession, device_id: int, *, request_id: str, body_hash: bytes, answer: dict[str, Any],
    now: datetime, sent: str | None, applied: str | None,
) -> None:
    await session.execute(_SAVE, {
        "b_id": device_id, "b_request_id": request_id, "b_hash": body_hash, "b_answer": answer,
        "b_now": now, "b_sent": sent, "b_applied": applied,
    })


async def queue_row(session: AsyncSession, command_id: int) -> dict[str, Any] | None:
    row = (await session.execute(_QUEUE_ROW, {"b_id": command_id})).first()
    return None if row is None else row._asdict()


async def redeliver_after(session: AsyncSession, command_ids: Sequence[int], at: datetime) -> None:
    """Delivered commands are not offered again before ``at`` (unless answered by then)."""
    await session.execute(_REDELIVER_AFTER, {"b_ids": list(command_ids), "b_at": at})


# ---- the device row -----------------------------------------------------------------------------
_FACTS: dict[tuple[str, ...], Any] = {}
_DEVICE_UPDATES: dict[tuple[bool, int, tuple[str, ...]], Update] = {}


async def lock_device_columns(
    session: AsyncSession, device_id: int, columns: tuple[str, ...]
) -> dict[str, Any] | None:
    stmt = _FACTS.get(columns)
    if stmt is None:
        stmt = select(*(d[c] for c in columns)).where(d.id == bindparam("b_id")).with_for_update()
        _FACTS[columns] = stmt
    row = (await session.execute(stmt, {"b_id": device_id})).first()
    return None if row is None else row._asdict()


def _device_update(postgres: bool, parts: int, columns: tuple[str, ...]) -> Update:
    # The parts are set inside the stored document by the database: the others (an app list
    # can be large) are neither read nor written back.
    values: dict[str, Any] = {c: bindparam(f"b_{c}", type_=d[c].type) for c in columns}
    if parts:
        if postgres:
            doc = sql_cast(bindparam("b_doc", type_=Text), JSONB)
            values["inventory"] = sql_cast(sql_cast(d.inventory, JSONB).op("||")(doc), JSON)
        else:
            args: list[Any] = []
            for i in range(parts):
                args += [bindparam(f"b_path{i}", type_=Text), func.json(bindparam(f"b_part{i}", type_=Text))]
            values["inventory"] = func.json_set(d.inventory, *args)
    return update(_devices).where(d.id == bindparam("b_id")).values(values)


async def write_device(
    session: AsyncSession, device_id: int, parts: dict[str, dict[str, Any]], changes: dict[str, Any]
) -> None:
    """One UPDATE: ``inventory[part] = entry`` for each part, and the changed columns."""
    postgres = session.get_bind().dialect.name == "postgresql"
    columns = tuple(sorted(changes))
    key = (postgres, len(parts), columns)
    stmt = _DEVICE_UPDATES.get(key)
    if stmt is None:
        stmt = _DEVICE_UPDATES[key] = _device_update(postgres, len(parts), columns)
    params: dict[str, Any] = {f"b_{c}": v for c, v in changes.items()}
    params["b_id"] = device_id
    if postgres:
        params["b_doc"] = json.dumps(parts)
    else:
        for i, (name, entry) in enumerate(sorted(parts.items())):
            params[f"b_path{i}"] = f'$."{name}"'
            params[f"b_part{i}"] = json.dumps(entry)
    await session.execute(stmt, params)


async def mark_wiped(session: AsyncSession, device_id: int) -> None:
    device = await session.get(Device, device_id, with_for_update=True)
    if device is not None:
        set_status(session, device, DeviceStatus.WIPED, "wipe_confirmed")
        device.push_valid = False


async def end_binding(session: AsyncSession, device_id: int, now: datetime) -> None:
    """The device is no longer managed, as after its own unenroll (``service_enroll.unenroll``):
    unmanaged (its certificate is refused ``device_not_managed`` at once), its push token cleared,
    no renewal pending. ORM changes, so that the cached bindings are dropped at commit."""
    device = await session.get(Device, device_id, with_for_update=True)
    if device is not None:
        set_status(session, device, DeviceStatus.UNMANAGED, "remove_confirmed")
        device.push_token = None
        device.push_valid = False
        device.push_changed_at = now
    kes = await session.get(KesDevice, device_id, with_for_update=True)
    if kes is not None:
        kes.renew_requested_at = None
        kes.updated_at = now


async def active_commands(session: AsyncSession, device_id: int) -> list[Command]:
    rows = await session.scalars(
        select(Command).where(Command.device_id == device_id, Command.active.is_(True)).order_by(Command.id)
    )
    return list(rows.all())


async def write_last_sync(session: AsyncSession, rows: Sequence[tuple[int, datetime]]) -> None:
    """``rows``: (device id, when): last seen and last sync, one statement per table, ``devices``
    first like every other transaction that takes both (no deadlock with a sync), the ids in
    ascending order (the order a nested loop over them takes the row locks on PostgreSQL)."""
    rows = sorted(rows)
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        params: dict[str, Any] = {"b_ids": [r[0] for r in rows], "b_ats": [r[1] for r in rows]}
    else:  # the text SQLite stores for a bound time, so that the column reads back the same
        stamp = _STAMP.get(connection.dialect)
        if stamp is None:
            stamp = _STAMP[connection.dialect] = cast(
                Callable[[Any], str], UtcDateTime().dialect_impl(connection.dialect).bind_processor(
                    connection.dialect))
        params = {"b_pairs": json.dumps([(device_id, stamp(at)) for device_id, at in rows])}
    by_device, by_kes = _LAST_SYNC[connection.dialect.name == "postgresql"]
    await connection.execute(by_device, params)
    await connection.execute(by_kes, params)


_STAMP: dict[Dialect, Callable[[Any], str]] = {}


_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


async def notify(engine: AsyncEngine, channel: str, payloads: Sequence[str]) -> None:
    """``NOTIFY channel, payload`` for each payload, at once (PostgreSQL; outside a transaction)."""
    async with engine.connect() as conn:
        for payload in payloads:
            await conn.execute(_NOTIFY, {"channel": channel, "payload": payload})
        await conn.commit()


async def agent_state(session: AsyncSession, device_id: int) -> tuple[Device, KesDevice | None] | None:
    device = await session.get(Device, device_id)
    if device is None:
        return None
    return device, await session.get(KesDevice, device_id)
