"""The command round trip's statements on SQLite in a ``mdm.db.sqlite_direct`` transaction: the
same ``Prepared`` statements, rows and order as ``store_commands.claim``/``claim_next``,
``store_delivery.mark_delivered`` and ``store_delivery.take_and_finish(guarded=True)`` write in a
session's transaction, run straight on the kept sqlite3 connection. Commands come back as
detached ``Command`` objects (read only: they belong to no session)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import make_transient_to_detached

from mdm.core.store_commands import _CLAIM, _CLAIM_NEXT_SQLITE
from mdm.core.store_delivery import (
    _FINISH,
    _INSERT_JOURNAL,
    _SET_IN_FLIGHT,
    _TAKE_IN_FLIGHT_GUARDED,
    FINISH_COLUMNS,
)
from mdm.core.store_events import _INSERT_ROW as _INSERT_EVENT
from mdm.db.models import Command, utcnow
from mdm.db.sqlite_direct import Tx

_MAPPER = Command.__mapper__


def _command(values: dict[str, Any]) -> Command:
    command: Command = _MAPPER.class_manager.new_instance()
    command.__dict__.update(values)
    make_transient_to_detached(command)
    return command


def claim(tx: Tx, command_id: int) -> Command | None:
    """``store_commands.claim``: the command claimed (its row as now written), or None when it
    is no longer ``processing``."""
    rows = tx.mappings(_CLAIM, {"b_id": command_id, "b_now": utcnow()})
    return _command(rows[0]) if rows else None


def claim_next(tx: Tx, device_id: int, *, ready_only: bool) -> Command | None:
    """``store_commands.claim_next`` (found and claimed in one statement; the write transaction
    holds SQLite's lock, so no row means no command)."""
    rows = tx.mappings(_CLAIM_NEXT_SQLITE[ready_only], {"b_device": device_id, "b_now": utcnow()})
    return _command(rows[0]) if rows else None


def mark_delivered(tx: Tx, command_id: int, event: dict[str, Any] | None) -> None:
    """``store_delivery.mark_delivered``: in flight; for a first delivery (``event``) also its
    ``delivered`` journal entry and the event, in this order."""
    tx.execute(_SET_IN_FLIGHT, {"b_id": command_id})
    if event is not None:
        tx.execute(
            _INSERT_JOURNAL,
            {"command_id": command_id, "status": "delivered", "detail": None, "at": utcnow()},
        )
        tx.execute(_INSERT_EVENT, event)


def take_and_finish(
    tx: Tx,
    command: Command,
    values: dict[str, Any],
    journal: tuple[str, str | None],
    event: dict[str, Any],
) -> bool | None:
    """``store_delivery.take_and_finish(guarded=True)``: whether the device has other commands
    queued; None, nothing written, when ``command`` is not in flight with the status and
    deliveries it was delivered with."""
    taken = tx.execute(
        _TAKE_IN_FLIGHT_GUARDED,
        {"b_id": command.id, "g_status": command.status, "g_attempts": command.attempts},
    )
    if not taken:
        return None
    params = {f"b_{name}": values[name] for name in FINISH_COLUMNS}
    params["b_id"] = command.id
    tx.execute(_FINISH, params)
    tx.execute(
        _INSERT_JOURNAL,
        {"command_id": command.id, "status": journal[0], "detail": journal[1], "at": utcnow()},
    )
    tx.execute(_INSERT_EVENT, event)
    return bool(taken[0][2])
