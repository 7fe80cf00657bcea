"""A device channel's TokenUpdate on PostgreSQL outside a transaction block
(``mdm.db.prepared.autocommit``): the state read without a lock, then one statement that writes
the change and its event only if the rows are still as read.

In a transaction a TokenUpdate was BEGIN, the state read under the rows' locks, the writes and
the event (one statement: ``store_checkin_writes``), COMMIT: four round trips, two of them only
the transaction block, each a turn of the event loop here and a statement of the database server,
which shares the cores in a check-in storm. Here it is two, or one when nothing changed (a
repeated TokenUpdate writes nothing). The write locks both rows first (``FOR UPDATE`` in a CTE,
which re-reads them as last committed) and compares every column the decision was made from with
what was read: when any differs (another check-in, a push feedback or a deletion got there
first), the statement writes nothing and returns no row, and the caller runs the transactional
path, which decides again under the locks. The updates and the event are data-modifying CTEs of
the one statement, so that they commit together or not at all.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from mdm.core.store_events import EVENT_COLUMNS
from mdm.db.models import Device, Event
from mdm.db.prepared import Direct, Prepared
from mdm.ios.store_checkin import TokenState
from mdm.ios.tables import IosDevice

_DEVICES = cast(Table, Device.__table__)
_IOS = cast(Table, IosDevice.__table__)
_EVENTS = cast(Table, Event.__table__)
_d, _i = _DEVICES.c, _IOS.c
_EVENT_KEYS = frozenset(EVENT_COLUMNS)

# What a TokenUpdate decides from (``store_checkin.TokenState``), by table.
_STATE_COLUMNS = (
    _d.push_token, _d.push_magic, _d.push_valid,
    _i.unlock_token, _i.awaiting_configuration, _i.last_signed_at,
)  # fmt: skip
_JOINED = _DEVICES.join(_IOS, _i.device_id == _d.id)
_STATE = Prepared(select(*_STATE_COLUMNS).select_from(_JOINED).where(_d.id == bindparam("device_id")))
# Per (device columns, binding columns) written: the guarded statement, built and compiled once.
_WRITES: dict[tuple[tuple[str, ...], tuple[str, ...]], Prepared] = {}


async def token_state(conn: Direct, device_id: int) -> TokenState | None:
    """What a TokenUpdate compares with, as last committed (no lock); None: unbound."""
    rows = await conn.mappings(_STATE, {"device_id": device_id})
    return TokenState(**rows[0]) if rows else None


def _still(column: Any) -> ColumnElement[bool]:
    """``column`` still holds the value read (``g_<name>``; NULL equal to NULL)."""
    return cast(
        "ColumnElement[bool]",
        column.is_not_distinct_from(bindparam(f"g_{column.name}", type_=column.type)),
    )


def _write(device_keys: tuple[str, ...], binding_keys: tuple[str, ...]) -> Prepared:
    current = (
        select(_d.id)
        .select_from(_JOINED)
        .where(_d.id == bindparam("g_id"), *(_still(c) for c in _STATE_COLUMNS))
        .with_for_update(of=[_DEVICES, _IOS])
        .cte("current_state")
    )
    device = (
        update(_DEVICES)
        .where(_d.id.in_(select(current.c.id)))
        .values({c: bindparam(f"d_{c}", type_=_d[c].type) for c in device_keys})
        .returning(_d.id)
        .cte("device_write")
    )
    binding = (
        update(_IOS)
        .where(_i.device_id.in_(select(current.c.id)))
        .values({c: bindparam(f"i_{c}", type_=_i[c].type) for c in binding_keys})
        .returning(_i.device_id)
        .cte("binding_write")
    )
    event = select(*(bindparam(f"e_{c}", type_=_EVENTS.c[c].type) for c in EVENT_COLUMNS))
    statement = (
        insert(_EVENTS)
        .from_select(list(EVENT_COLUMNS), event.select_from(current))
        .returning(_EVENTS.c.id)
        .add_cte(device)
        .add_cte(binding)
    )
    return Prepared(statement)


async def write_if_unchanged(
    conn: Direct,
    device_id: int,
    read: TokenState,
    *,
    device: dict[str, Any],
    binding: dict[str, Any],
    event: dict[str, Any],
) -> bool:
    """Update these columns of the device and of its binding (both non-empty) and write ``event``
    (an ``events.event_values`` row), in one statement that commits by itself, if the state is
    still ``read``: whether it was (False: nothing written)."""
    if event.keys() != _EVENT_KEYS:
        raise ValueError("the event is a row of mdm.core.events.event_values")
    if not device or not binding:
        raise ValueError("a TokenUpdate writes columns of both rows")
    key = (tuple(sorted(device)), tuple(sorted(binding)))
    statement = _WRITES.get(key)
    if statement is None:
        statement = _WRITES[key] = _write(*key)
    params: dict[str, Any] = {"g_id": device_id}
    params.update((f"g_{c}", v) for c, v in read._asdict().items())
    params.update((f"d_{c}", v) for c, v in device.items())
    params.update((f"i_{c}", v) for c, v in binding.items())
    params.update((f"e_{c}", v) for c, v in event.items())
    return bool(await conn.execute(statement, params))
