"""A device channel's TokenUpdate, and the Authenticate of a device checking in again
(``checkin_authenticate_direct``), on PostgreSQL outside a transaction block
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
the one statement, so that they commit together or not at all. Authenticate's statement has the
same form, guarded by every device and binding column its checks read (``checked_state``: its
transactional read without the locks).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import JSON, Column, Table, bindparam, insert, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from mdm.core.store_events import EVENT_COLUMNS
from mdm.db.models import Device, Event
from mdm.db.prepared import Direct, Prepared
from mdm.ios import store_checkin
from mdm.ios.store_checkin import Checked, TokenState
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
# What Authenticate decides from (``store_checkin.checked_rows``'s device and binding).
_CHECKED_COLUMNS = (
    *(_d[c] for c in store_checkin.DEVICE_COLUMNS if c != "id"),
    *(_i[c] for c in store_checkin.BINDING_COLUMNS),
)
# Per (guarded columns, device columns, binding columns) written: the statement, built and
# compiled once.
Key = tuple[tuple[Column[Any], ...], tuple[str, ...], tuple[str, ...]]
_WRITES: dict[Key, Prepared] = {}


async def token_state(conn: Direct, device_id: int) -> TokenState | None:
    """What a TokenUpdate compares with, as last committed (no lock); None: unbound."""
    rows = await conn.mappings(_STATE, {"device_id": device_id})
    return TokenState(**rows[0]) if rows else None


async def checked_state(
    conn: Direct, fingerprint: bytes, serial: str, identifier: str, enrollment_serial: str
) -> Checked:
    """``store_checkin.checked_rows`` as last committed, without locking the rows."""
    params = store_checkin.checked_params(fingerprint, serial, identifier, enrollment_serial)
    (values,) = await conn.mappings(store_checkin.CHECKED_ROWS_UNLOCKED, params)
    return store_checkin.checked_of_row(values)


def _still(column: Any) -> ColumnElement[bool]:
    """``column`` still holds the value read (``g_<name>``; NULL equal to NULL; a JSON document
    compared as ``jsonb``: ``json`` has no equality)."""
    value: Any = bindparam(f"g_{column.name}", type_=column.type)
    if isinstance(column.type, JSON):
        column, value = sql_cast(column, JSONB), sql_cast(value, JSONB)
    return cast("ColumnElement[bool]", column.is_not_distinct_from(value))


def _write(
    guarded: tuple[Column[Any], ...], device_keys: tuple[str, ...], binding_keys: tuple[str, ...]
) -> Prepared:
    current = (
        select(_d.id)
        .select_from(_JOINED)
        .where(_d.id == bindparam("g_id"), *(_still(c) for c in guarded))
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
    statement = insert(_EVENTS).from_select(list(EVENT_COLUMNS), event.select_from(current))
    if device_keys:  # (Authenticate's may leave the device as it is)
        statement = statement.add_cte(device)
    return Prepared(statement.add_cte(binding).returning(_EVENTS.c.id))


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
    if not device:
        raise ValueError("a TokenUpdate writes columns of both rows")
    params: dict[str, Any] = {f"g_{c}": v for c, v in read._asdict().items()}
    return await _guarded_write(conn, _STATE_COLUMNS, device_id, params, device, binding, event)


async def authenticated_if_unchanged(
    conn: Direct,
    read: Checked,
    *,
    device: dict[str, Any],
    binding: dict[str, Any],
    event: dict[str, Any],
) -> bool:
    """Authenticate of a device checking in again: update these columns of the device (may be
    empty) and of its binding and write ``event``, in one statement that commits by itself, if
    the device and binding rows are still as ``read`` (``checked_state``; every column
    Authenticate decided from): whether they were (False: nothing written)."""
    if read.device is None or read.binding is None:
        raise ValueError("Authenticate's single statement updates a device bound already")
    params = {f"g_{c.name}": getattr(read.binding if c.table is _IOS else read.device, c.name)
              for c in _CHECKED_COLUMNS}  # fmt: skip
    return await _guarded_write(conn, _CHECKED_COLUMNS, read.device.id, params, device, binding, event)


async def _guarded_write(
    conn: Direct,
    guarded: tuple[Column[Any], ...],
    device_id: int,
    params: dict[str, Any],
    device: dict[str, Any],
    binding: dict[str, Any],
    event: dict[str, Any],
) -> bool:
    if event.keys() != _EVENT_KEYS:
        raise ValueError("the event is a row of mdm.core.events.event_values")
    if not binding:
        raise ValueError("the guarded write updates the binding")
    key = (guarded, tuple(sorted(device)), tuple(sorted(binding)))
    statement = _WRITES.get(key)
    if statement is None:
        statement = _WRITES[key] = _write(*key)
    params["g_id"] = device_id
    params.update((f"d_{c}", v) for c, v in device.items())
    params.update((f"i_{c}", v) for c, v in binding.items())
    params.update((f"e_{c}", v) for c, v in event.items())
    return bool(await conn.execute(statement, params))
