"""The writes that end a TokenUpdate and the Authenticate of a device checking in again: columns
of the device, columns of its binding and the event that reports them, in the caller's
transaction (whose reads locked both rows).

On PostgreSQL they are one statement, the updates as data-modifying CTEs of the event's INSERT:
one round trip instead of three (each a turn of the event loop here and a statement of the
database server, which shares the cores in a storm). SQLite has no data-modifying CTEs: one
statement each, in the same order. The event row is ``mdm.core.events.event_values``'s, written
after whatever the session still holds, as ``events.emit_now`` writes it.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.store_events import EVENT_COLUMNS, flush_pending
from mdm.db.models import Device, Event
from mdm.db.prepared import Prepared, connection_of
from mdm.ios import store_checkin
from mdm.ios.tables import IosDevice

_DEVICES = cast(Table, Device.__table__)
_IOS = cast(Table, IosDevice.__table__)
_EVENTS = cast(Table, Event.__table__)
_EVENT_KEYS = frozenset(EVENT_COLUMNS)
# Per (device columns, binding columns): the statement, built and compiled once.
_STATEMENTS: dict[tuple[tuple[str, ...], tuple[str, ...]], Prepared] = {}


def _statement(device_keys: tuple[str, ...], binding_keys: tuple[str, ...]) -> Prepared:
    d, i = _DEVICES.c, _IOS.c
    statement: Insert = insert(_EVENTS).values(
        {c: bindparam(f"e_{c}", type_=_EVENTS.c[c].type) for c in EVENT_COLUMNS}
    )
    if device_keys:
        device = (
            update(_DEVICES)
            .where(d.id == bindparam("d_id"))
            .values({c: bindparam(f"d_{c}", type_=d[c].type) for c in device_keys})
            .returning(d.id)
        )
        statement = statement.add_cte(device.cte("device_write"))
    if binding_keys:
        binding = (
            update(_IOS)
            .where(i.device_id == bindparam("i_id"))
            .values({c: bindparam(f"i_{c}", type_=i[c].type) for c in binding_keys})
            .returning(i.device_id)
        )
        statement = statement.add_cte(binding.cte("binding_write"))
    return Prepared(statement)


async def write_with_event(
    session: AsyncSession,
    device_id: int,
    *,
    device: dict[str, Any],
    binding: dict[str, Any],
    event: dict[str, Any],
) -> None:
    """Update these columns of the device and of its ``ios_devices`` row (either may be empty;
    a changed fingerprint is reported by the caller with ``store_checkin.binding_changed``),
    then write ``event`` (an ``events.event_values`` row)."""
    if event.keys() != _EVENT_KEYS:
        raise ValueError("the event is a row of mdm.core.events.event_values")
    connection = await connection_of(session)
    if connection.dialect.name != "postgresql":
        await store_checkin.update_device(session, device_id, device)
        if binding:
            await store_checkin.rebind(session, device_id, binding)
        await store_checkin.insert_event(session, event)
        return
    await flush_pending(session)
    key = (tuple(sorted(device)), tuple(sorted(binding)))
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = _statement(*key)
    params: dict[str, Any] = {"d_id": device_id, "i_id": device_id}
    params.update((f"d_{c}", v) for c, v in device.items())
    params.update((f"i_{c}", v) for c, v in binding.items())
    params.update((f"e_{c}", v) for c, v in event.items())
    await statement.run(connection, params)
