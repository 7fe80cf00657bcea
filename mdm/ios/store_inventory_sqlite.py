"""An inventory answer's device statements on SQLite in a ``mdm.db.sqlite_direct`` transaction:
the same ``Prepared`` statements as ``mdm.ios.store.lock_device_columns`` and ``write_inventory``
and ``mdm.core.events.emit_now`` run in a session's transaction (the columns read, one UPDATE of
the part and the changed columns, the event), straight on the kept sqlite3 connection."""

from __future__ import annotations

import json
from typing import Any, cast

from sqlalchemy import Table, bindparam, select

from mdm.core.store_events import _INSERT_ROW as _INSERT_EVENT
from mdm.db.models import Device
from mdm.db.prepared import Prepared
from mdm.db.sqlite_direct import Tx
from mdm.ios.inventory import FACT_COLUMNS
from mdm.ios.store import _inventory_update

_devices = cast(Table, Device.__table__).c
# As ``store.lock_device_columns`` builds it (FOR UPDATE means nothing to SQLite: the write
# transaction holds the database's lock).
_COLUMNS = Prepared(
    select(*(_devices[c] for c in FACT_COLUMNS)).where(_devices.id == bindparam("b_id")).with_for_update()
)
_UPDATES: dict[tuple[str, ...], Prepared] = {}


def device_columns(tx: Tx, device_id: int) -> dict[str, Any] | None:
    """The device's ``FACT_COLUMNS`` (None: no such device)."""
    rows = tx.mappings(_COLUMNS, {"b_id": device_id})
    return rows[0] if rows else None


def write_inventory(
    tx: Tx, device_id: int, part: str, entry: dict[str, Any], changes: dict[str, Any]
) -> None:
    """``store.write_inventory``: ``inventory[part] = entry`` and the changed columns, one UPDATE."""
    columns = tuple(sorted(changes))
    stmt = _UPDATES.get(columns)
    if stmt is None:
        stmt = _UPDATES[columns] = Prepared(_inventory_update(False, columns))
    params: dict[str, Any] = {f"b_{c}": v for c, v in changes.items()}
    params.update(b_id=device_id, b_entry=json.dumps(entry), b_part=part, b_path=f"$.{part}")
    tx.execute(stmt, params)


def insert_event(tx: Tx, event: dict[str, Any]) -> None:
    """``store_events.insert_event`` of an outbox row (``events.event_values``)."""
    tx.execute(_INSERT_EVENT, event)
