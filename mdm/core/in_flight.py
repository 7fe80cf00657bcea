"""Commands this process just delivered, as they are in the database after their delivery, by
GUID: the device's final answer to one of them is recorded without reading its command first.

A round trip read the command by GUID when the answer came, although the server had built the
command's message from that very row a moment before: on PostgreSQL one of the round trip's four
statements, on SQLite one of nine. The copy kept here is only a guess of the row: the write that
records the answer checks under the row's lock (PostgreSQL) or in the write transaction (SQLite)
that the command still has the status and the number of deliveries it was delivered with, and
that its queue row is in flight. Whatever changed it since (a recall, a NotNow and a new
delivery, another step answered) changes one of those, so the write does nothing and the caller
reads the command and decides as before. Nothing is kept for a command that another replica
delivers: its answer reads the command, as before.

A copy is taken out when it is used; at most ``SIZE`` per engine are kept (an answer comes
seconds after its delivery; an older copy is dropped first). Per engine, weakly: tests open many.
"""

from __future__ import annotations

import weakref
from typing import Any

from cachetools import LRUCache
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import make_transient_to_detached

from mdm.db.models import Command

SIZE = 8192
_MAPPER = Command.__mapper__
_COLUMNS = tuple(attr.key for attr in _MAPPER.column_attrs)
_KEPT: weakref.WeakKeyDictionary[Engine, LRUCache[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def remember(engine: AsyncEngine, command: Command) -> None:
    """Keep ``command`` as its row now is (claimed: its ``attempts`` counts this delivery)."""
    kept = _KEPT.get(engine.sync_engine)
    if kept is None:
        kept = _KEPT[engine.sync_engine] = LRUCache(maxsize=SIZE)
    values = command.__dict__
    kept[command.guid] = {key: values[key] for key in _COLUMNS if key in values}


def take(engine: AsyncEngine, guid: str) -> Command | None:
    """The command of ``guid`` as this process delivered it (a detached copy, to be checked by
    the write that uses it), or None; either way nothing is kept for it any more."""
    kept = _KEPT.get(engine.sync_engine)
    values = kept.pop(guid, None) if kept is not None else None
    if values is None or len(values) != len(_COLUMNS):
        return None
    command: Command = _MAPPER.class_manager.new_instance()
    command.__dict__.update(values)
    make_transient_to_detached(command)
    return command


def forget(engine: AsyncEngine, guid: str) -> None:
    kept = _KEPT.get(engine.sync_engine)
    if kept is not None:
        kept.pop(guid, None)
