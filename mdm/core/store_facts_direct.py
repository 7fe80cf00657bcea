"""A final answer that also describes the device (an inventory answer), on PostgreSQL in one
statement outside a transaction block (``mdm.db.prepared.autocommit``).

In a transaction this answer was seven round trips: BEGIN, the command locked by GUID, the
device's columns locked, the inventory written, its event, the command taken and finished (the
journal entry and the completion event with it), COMMIT. Here it is one statement, built on
``store_delivery.take_and_finish_pg(guarded=True)``: under the command's row lock, and only if
the command still has the status and deliveries it was delivered (or read) with and its queue
row is in flight, it takes the row out of the queue, finishes the command, journals it, writes
the device (the answer's columns set, ``attributes`` merged, the part set inside ``inventory``)
and adds the two events in the order the transactional path emits them (the inventory's, then
the completion's). The device's row is not read first: what the statement writes does not
depend on what the row holds (``mdm.ios.inventory.blind_update``), and the database merges the
two JSON documents under the row's lock, so a concurrent writer of the device loses nothing.
Nothing is written when the command changed since; the caller then takes the transactional path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB

from mdm.core.store_delivery import FINISH_COLUMNS, guarded_command, others_queued
from mdm.core.store_events import EVENT_COLUMNS
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Device, Event
from mdm.db.prepared import Direct, Prepared

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_events = cast(Table, Event.__table__)
_devices = cast(Table, Device.__table__)


@dataclass(frozen=True, slots=True)
class FactsWrite:
    """What the answer writes to its device: ``inventory[part] = entry``, ``columns`` set,
    ``attributes`` (None: untouched) merged into the stored ones, and ``event`` (the outbox row
    announcing it, written before the command's completion event)."""

    part: str
    entry: dict[str, Any]
    columns: dict[str, Any]
    attributes: dict[str, Any] | None
    event: dict[str, Any]


def _as_jsonb(column: Any) -> Any:
    return sql_cast(column, JSONB)


def _statement(columns: tuple[str, ...], attributes: bool) -> Prepared:
    c, q, d, e, j = _commands.c, _queue.c, _devices.c, _events.c, _journal.c
    locked = guarded_command()
    taken = (
        delete(_queue)
        .where(q.command_id.in_(select(locked.c.id)), q.in_flight.is_(True))
        .returning(q.command_id, q.device_id)
        .cte("taken")
    )
    finished = (
        update(_commands)
        .where(c.id.in_(select(taken.c.command_id)))
        .values({name: bindparam(f"b_{name}", type_=c[name].type) for name in FINISH_COLUMNS})
        .returning(c.id, c.device_id)
        .cte("finished")
    )
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
    # The part set inside the stored document (the other parts, app and profile lists, are
    # neither read nor sent back); the answer's attribute keys merged into the stored object.
    entry = _as_jsonb(bindparam("d_entry", type_=Text))
    part = func.jsonb_build_object(bindparam("d_part", type_=Text), entry)
    values: dict[str, Any] = {name: bindparam(f"d_{name}", type_=d[name].type) for name in columns}
    values["inventory"] = sql_cast(_as_jsonb(d.inventory).op("||")(part), JSON)
    if attributes:
        stored = case(
            (func.jsonb_typeof(_as_jsonb(d.attributes)) == "object", _as_jsonb(d.attributes)),
            else_=literal_column("'{}'::jsonb"),
        )
        given = _as_jsonb(bindparam("d_attributes", type_=Text))
        values["attributes"] = sql_cast(stored.op("||")(given), JSON)
    facts = (
        update(_devices)
        .where(d.id == select(finished.c.device_id).scalar_subquery())
        .values(values)
        .returning(d.id)
        .cte("facts")
    )
    # Both events in one INSERT, in the order of ``ord``: the outbox is read in id order, and
    # two data-modifying CTEs on one table run in no defined order.
    announced = union_all(
        select(
            literal_column("1").label("ord"),
            *(bindparam(f"i_{n}", type_=e[n].type).label(n) for n in EVENT_COLUMNS),
        ).select_from(facts),
        select(
            literal_column("2").label("ord"),
            *(bindparam(f"e_{n}", type_=e[n].type).label(n) for n in EVENT_COLUMNS),
        ).select_from(finished),
    ).subquery("announced")
    evented = (
        insert(_events)
        .from_select(
            list(EVENT_COLUMNS), select(*(announced.c[n] for n in EVENT_COLUMNS)).order_by(announced.c.ord)
        )
        .returning(e.id)
        .cte("evented")
    )
    others = others_queued(taken.c.device_id, taken.c.command_id)
    return Prepared(select(taken.c.command_id, taken.c.device_id, others).add_cte(journaled, evented))


# By (the columns set, whether attributes are merged): a handful of shapes in practice.
_STATEMENTS: dict[tuple[tuple[str, ...], bool], Prepared] = {}


async def take_finish_and_describe(
    conn: Direct,
    command: Command,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
    facts: FactsWrite,
) -> bool | None:
    """``store_delivery_direct.take_and_finish`` of ``command`` (as delivered or read) with
    ``facts`` written to its device, if the command is still in flight with the status and
    deliveries it had: whether the device has other commands queued; None, nothing written,
    otherwise."""
    columns = tuple(sorted(facts.columns))
    key = (columns, facts.attributes is not None)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = _statement(*key)
    params = {f"b_{name}": values[name] for name in FINISH_COLUMNS}
    params.update(b_id=command.id, j_status=journal[0], j_detail=journal[1], j_at=values["finished_at"])
    params.update(g_status=command.status, g_attempts=command.attempts)
    params.update({f"e_{key}": value for key, value in event.items()})
    params.update({f"i_{key}": value for key, value in facts.event.items()})
    params.update({f"d_{name}": value for name, value in facts.columns.items()})
    params.update(d_part=facts.part, d_entry=json.dumps(facts.entry))
    if facts.attributes is not None:
        params["d_attributes"] = json.dumps(facts.attributes)
    rows = await conn.execute(statement, params)
    return bool(rows[0][2]) if rows else None
