"""The single-device enqueue's statements on SQLite in a ``mdm.db.sqlite_direct`` transaction: the
same ``Prepared`` statements, rows and order as ``store_enqueue.device_facts`` and
``store_enqueue.insert_command`` run in a session's transaction (the command unless the device has
an active one of its type, its journal entry, its ``command_created`` event, its queue row, the
request's audit event), straight on the kept sqlite3 connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, bindparam, select

from mdm.core.library import DeviceFacts
from mdm.core.push import OwedPart
from mdm.core.store_enqueue import (
    _FACTS,
    _INSERT_JOURNAL,
    _INSERT_QUEUE,
    _INSERT_SQLITE,
    COMMAND_COLUMNS,
    _facts,
)
from mdm.core.store_events import _INSERT_ROW as _INSERT_EVENT
from mdm.core.store_events import _ROW_KEYS as EVENT_KEYS
from mdm.db.prepared import Prepared
from mdm.db.sqlite_direct import Tx

__all__ = ["EVENT_KEYS", "device_facts", "insert_command"]


def device_facts(tx: Tx, device_id: int) -> DeviceFacts | None:
    """``store_enqueue.device_facts``, read in the write transaction."""
    return _facts(tx.mappings(_FACTS, {"b_id": device_id}))


def insert_command(
    tx: Tx,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
    audit: dict[str, Any] | None,
    owed: OwedPart | None = None,
) -> int | None:
    """``store_enqueue.insert_command``'s rows: the command's id, or None with nothing written
    when the device already has an active command of that type. ``event`` and ``audit`` are
    outbox rows of ``EVENT_KEYS``; ``owed``: the device's wake-up, written after them as the
    transactional path's ``Pushers.owe`` does."""
    rows = tx.execute(_INSERT_SQLITE, {f"c_{n}": values[n] for n in COMMAND_COLUMNS})
    if not rows:
        return None
    command_id = int(rows[0][0])
    tx.execute(_INSERT_JOURNAL, {
        "command_id": command_id, "status": journal[0], "detail": journal[1], "at": values["created_at"],
    })
    tx.execute(_INSERT_EVENT, event)
    tx.execute(_INSERT_QUEUE, {
        "command_id": command_id, "device_id": values["device_id"], "priority": values["priority"],
        "created_at": values["created_at"], "not_before": None, "in_flight": False, "not_now_count": 0,
    })
    if audit is not None:
        tx.execute(_INSERT_EVENT, audit)
    if owed is not None:
        tx.execute(_owed_statement(owed.build), {**owed.params, "w_device_id": values["device_id"]})
    return command_id


_OWED: dict[Callable[[Any], Any], Prepared] = {}


def _owed_statement(build: Callable[[Any], Any]) -> Prepared:
    """``build``'s INSERT for the one device ``w_device_id``, built and compiled once per ``build``."""
    prepared = _OWED.get(build)
    if prepared is None:
        prepared = _OWED[build] = Prepared(build(select(bindparam("w_device_id", type_=BigInteger))))
    return prepared
