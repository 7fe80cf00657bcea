"""The statements of a single-device enqueue (``mdm.core.command_enqueue.enqueue_one``, the admin API's
``POST /devices/{id}/commands``): built once, run through ``mdm.db.prepared`` (no ORM
``values()`` coerced and hashed per call, no unit of work for the command, its journal entry
and its event).

- the device's facts (``DeviceFacts``: the few columns a translation of a bulk variant reads),
  one point look-up instead of loading the whole device with its inventory;
- the command, written unless the device already has an active command of its type (the
  partial unique index ``uq_commands_one_active_type``), with its first journal entry, its queue
  row, its ``command_created`` event and the request's audit event (``admin_action``): on
  PostgreSQL one statement (data-modifying CTEs that run only for the inserted row, and a
  ``pg_notify`` per queue channel for the other replicas' queue-empty hints), on SQLite one
  statement each. No ORM object, so no unit of work at commit (its flush of the queue row and the
  audit event was a fifth of the enqueue's CPU); ``enqueue_one`` clears this process's hints as
  the queue row's ORM listeners would (``mdm.core.queue_hint``).
- on PostgreSQL, that one statement may also run outside a transaction block
  (``insert_command_direct``, ``mdm.db.prepared.autocommit``): it is atomic by itself, and may
  owe the device's wake-up in it too (``mdm.core.push.OwedPart``: the push dispatcher's row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, false, func, insert, literal, null, select, text, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import queue_hint
from mdm.core.library import DeviceFacts
from mdm.core.push import OwedPart
from mdm.core.queue_hint import queued_channels
from mdm.core.store_events import EVENT_COLUMNS, insert_event
from mdm.db import audit_context
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Device, Event
from mdm.db.prepared import Direct, Prepared

_commands = cast(Table, Command.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_devices = cast(Table, Device.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_events = cast(Table, Event.__table__)
QUEUE_COLUMNS = (
    "command_id", "device_id", "priority", "created_at", "not_before", "in_flight", "not_now_count"
)

# Every column of a new command (``command_enqueue.enqueue_one`` gives them all).
COMMAND_COLUMNS = (
    "guid", "device_id", "type", "args", "payload", "flags", "priority", "status", "result_info",
    "result_data", "created_by", "created_at", "updated_at", "delivered_at", "finished_at",
    "attempts", "active",
)
_d = _devices.c
_FACTS = Prepared(
    select(_d.id, _d.protocol, _d.os_name, _d.model, _d.attributes).where(_d.id == bindparam("b_id"))
)


def _insert_command(insert_for: Any) -> Any:
    """INSERT the command unless the device has an active one of its type; RETURNING its id."""
    return (
        insert_for(_commands)
        .values({n: bindparam(f"c_{n}", type_=_commands.c[n].type) for n in COMMAND_COLUMNS})
        .on_conflict_do_nothing(index_elements=["device_id", "type"], index_where=text("active"))
        .returning(_commands.c.id)
    )


_INSERT_SQLITE = Prepared(_insert_command(sqlite_insert))
_INSERT_JOURNAL = Prepared(insert(_journal), ("command_id", "status", "detail", "at"))
# The queue row of a new command: what ``store_commands.queue_row`` adds through the ORM, without
# its unit of work (``enqueue_one`` clears the queue-empty hints and NOTIFYs as its listeners do).
_INSERT_QUEUE = Prepared(insert(_queue), QUEUE_COLUMNS)


def _enqueue_pg(audited: bool, channels: int, owed: Callable[[Any], Any] | None) -> Prepared:
    """The whole enqueue in one statement: the command unless the device has an active one of its
    type, and only then its journal entry, its queue row, its ``command_created`` event (then the
    request's audit event, ``audited``), a ``pg_notify`` per channel (``channels``) and the
    device's wake-up (``owed``: ``OwedPart.build``)."""
    created = _insert_command(pg_insert).cte("created")
    j, q, e = _journal.c, _queue.c, _events.c
    journaled = insert(_journal).from_select(
        ["command_id", "status", "detail", "at"],
        select(created.c.id, bindparam("j_status", type_=j.status.type),
               bindparam("j_detail", type_=j.detail.type), bindparam("c_created_at", type_=j.at.type)),
    ).cte("journaled")
    queued = insert(_queue).from_select(
        list(QUEUE_COLUMNS),
        select(created.c.id, bindparam("c_device_id", type_=q.device_id.type),
               bindparam("c_priority", type_=q.priority.type),
               bindparam("c_created_at", type_=q.created_at.type), null(), false(), literal(0)),
    ).cte("queued")
    # The command's event, then the audit's, in this order (as the ORM path wrote them).
    events = [
        select(*(bindparam(f"{prefix}_{n}", type_=e[n].type) for n in EVENT_COLUMNS)).select_from(created)
        for prefix in ("e", "a")[: 2 if audited else 1]
    ]
    evented = insert(_events).from_select(
        list(EVENT_COLUMNS), events[0] if len(events) == 1 else union_all(*events)
    ).cte("evented")
    notified = [func.pg_notify(bindparam(f"n_{i}", type_=String), bindparam("n_payload", type_=String))
                for i in range(channels)]
    parts = [journaled, queued, evented]
    if owed is not None:
        device = select(bindparam("c_device_id", type_=_commands.c.device_id.type)).select_from(created)
        parts.append(owed(device).cte("woken"))
    return Prepared(select(created.c.id, *notified).add_cte(*parts))


_ENQUEUE_PG: dict[tuple[bool, int, Callable[[Any], Any] | None], Prepared] = {}


def _pg_statement(audited: bool, channels: int, owed: Callable[[Any], Any] | None = None) -> Prepared:
    key = (audited, channels, owed)
    statement = _ENQUEUE_PG.get(key)
    if statement is None:
        statement = _ENQUEUE_PG[key] = _enqueue_pg(audited, channels, owed)
    return statement


async def device_facts(session: AsyncSession, device_id: int) -> DeviceFacts | None:
    return _facts(await _FACTS.mappings(session, {"b_id": device_id}))


async def device_facts_direct(conn: Direct, device_id: int) -> DeviceFacts | None:
    return _facts(await conn.mappings(_FACTS, {"b_id": device_id}))


def _facts(rows: list[dict[str, Any]]) -> DeviceFacts | None:
    if not rows:
        return None
    row = rows[0]
    return DeviceFacts(row["id"], row["protocol"], row["os_name"], row["model"], row["attributes"] or {})


def _pg_params(
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
    audit: dict[str, Any] | None,
    owed: OwedPart | None = None,
) -> tuple[Prepared, dict[str, Any]]:
    channels = queued_channels()
    params = {f"c_{n}": values[n] for n in COMMAND_COLUMNS}
    params.update(j_status=journal[0], j_detail=journal[1], n_payload=str(values["device_id"]))
    params.update({f"e_{key}": value for key, value in event.items()})
    if audit is not None:
        params.update({f"a_{key}": value for key, value in audit.items()})
    params.update({f"n_{i}": channel for i, channel in enumerate(channels)})
    if owed is not None:
        params.update(owed.params)
    return _pg_statement(audit is not None, len(channels), owed.build if owed is not None else None), params


async def insert_command(
    session: AsyncSession, values: dict[str, Any], journal: tuple[str, str | None], event: dict[str, Any]
) -> int | None:
    """Write the command ``values`` (``COMMAND_COLUMNS``), its journal entry ``journal`` (status,
    detail; at its creation time), its queue row, its outbox row ``event`` and the audit event of
    the request in progress (``audit_context.claim``; committed with them), and on PostgreSQL
    NOTIFY the queue channels (``queue_hint.queued_channels``; delivered at commit); the
    command's id, or None with nothing written when the device already has an active command of
    that type. Clears this process's queue-empty hints of the device now and at commit, as the
    queue row's ORM listeners do."""
    pending = audit_context.claim(session)
    audit = pending.values(pending) if pending is not None and pending.values is not None else None
    command_id = await _insert(session, values, journal, event, audit)
    if command_id is not None:
        device_id = values["device_id"]
        queue_hint.invalidate_everywhere(device_id)
        session.sync_session.info.setdefault(queue_hint.QUEUED_KEY, set()).add(device_id)
    return command_id


async def _insert(
    session: AsyncSession,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
    audit: dict[str, Any] | None,
) -> int | None:
    if session.get_bind().dialect.name == "postgresql":
        statement, params = _pg_params(values, journal, event, audit)
        rows = await statement.execute(session, params)
        return int(rows[0][0]) if rows else None
    rows = await _INSERT_SQLITE.execute(session, {f"c_{n}": values[n] for n in COMMAND_COLUMNS})
    if not rows:
        return None
    command_id = int(rows[0][0])
    entry = {"command_id": command_id, "status": journal[0], "detail": journal[1], "at": values["created_at"]}
    await _INSERT_JOURNAL.execute(session, entry)
    await insert_event(session, event)
    await _INSERT_QUEUE.execute(session, {
        "command_id": command_id, "device_id": values["device_id"], "priority": values["priority"],
        "created_at": values["created_at"], "not_before": None, "in_flight": False, "not_now_count": 0,
    })
    if audit is not None:
        await insert_event(session, audit)
    return command_id


async def insert_command_direct(
    conn: Direct,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
    audit: dict[str, Any] | None = None,
    owed: OwedPart | None = None,
) -> int | None:
    """``insert_command`` on PostgreSQL as one statement that commits by itself (``autocommit``),
    owing the device's wake-up in it too (``owed``) when the command is written."""
    statement, params = _pg_params(values, journal, event, audit, owed)
    rows = await conn.execute(statement, params)
    return int(rows[0][0]) if rows else None
