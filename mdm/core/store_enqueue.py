"""The statements of a single-device enqueue (``mdm.core.commands.enqueue_one``, the admin API's
``POST /devices/{id}/commands``): built once, run through ``mdm.db.prepared`` (no ORM
``values()`` coerced and hashed per call, no unit of work for the command, its journal entry
and its event).

- the device's facts (``DeviceFacts``: the few columns a translation of a bulk variant reads),
  one point look-up instead of loading the whole device with its inventory;
- the command, written unless the device already has an active command of its type (the
  partial unique index ``uq_commands_one_active_type``), with its first journal entry and its
  ``command_created`` event: on PostgreSQL one statement (data-modifying CTEs that run only for
  the inserted row), on SQLite one statement each.

The queue row is added to the session as an ORM object (``store_commands.queue_row``), flushed
with the request's audit event at commit: its insert listeners clear the queue-empty hints here
and tell the other replicas (``mdm.core.queue_hint``, ``mdm.ios.state``).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.library import DeviceFacts
from mdm.core.store_delivery import journal_and_event
from mdm.core.store_events import insert_event
from mdm.db.models import Command, CommandJournalEntry, Device
from mdm.db.prepared import Prepared

_commands = cast(Table, Command.__table__)
_journal = cast(Table, CommandJournalEntry.__table__)
_devices = cast(Table, Device.__table__)

# Every column of a new command (``commands.enqueue_one`` gives them all).
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


def _enqueue_pg() -> Prepared:
    created = _insert_command(pg_insert).cte("created")
    j = _journal.c
    journaled, evented = journal_and_event(
        created, created.c.id, bindparam("j_status", type_=j.status.type),
        bindparam("j_detail", type_=j.detail.type), bindparam("j_at", type_=j.at.type),
    )
    return Prepared(select(created.c.id).add_cte(journaled, evented))


_ENQUEUE_PG = _enqueue_pg()


async def device_facts(session: AsyncSession, device_id: int) -> DeviceFacts | None:
    rows = await _FACTS.mappings(session, {"b_id": device_id})
    if not rows:
        return None
    row = rows[0]
    return DeviceFacts(row["id"], row["protocol"], row["os_name"], row["model"], row["attributes"] or {})


async def insert_command(
    session: AsyncSession, values: dict[str, Any], journal: tuple[str, str | None], event: dict[str, Any]
) -> int | None:
    """Write the command ``values`` (``COMMAND_COLUMNS``), its journal entry ``journal`` (status,
    detail; at its creation time) and its outbox row ``event``; the command's id, or None with
    nothing written when the device already has an active command of that type."""
    params = {f"c_{n}": values[n] for n in COMMAND_COLUMNS}
    if session.get_bind().dialect.name == "postgresql":
        params.update(j_status=journal[0], j_detail=journal[1], j_at=values["created_at"])
        params.update({f"e_{key}": value for key, value in event.items()})
        rows = await _ENQUEUE_PG.execute(session, params)
        return int(rows[0][0]) if rows else None
    rows = await _INSERT_SQLITE.execute(session, params)
    if not rows:
        return None
    command_id = int(rows[0][0])
    entry = {"command_id": command_id, "status": journal[0], "detail": journal[1], "at": values["created_at"]}
    await _INSERT_JOURNAL.execute(session, entry)
    await insert_event(session, event)
    return command_id
