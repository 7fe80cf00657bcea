"""Delivery and final answer of a command on SQLite without SQLAlchemy's session
(``mdm.db.sqlite_direct``): the same life cycle as ``claim`` + ``delivered`` and
``complete(take=True)`` of ``mdm.core.commands`` (the same rows, journal entries and events, in
the same order, in one write transaction each), for the common case only. Anything else, and a
transaction that cannot start at once, is the caller's to run on the transactional path."""

from __future__ import annotations

from typing import Any

from mdm.core import commands, events
from mdm.core import store_delivery_sqlite as store
from mdm.core.event_types import COMMAND_DELIVERED
from mdm.db.models import Command
from mdm.db.sqlite_direct import Tx as Tx
from mdm.db.sqlite_direct import supported as supported
from mdm.db.sqlite_direct import transaction as transaction


def claim(tx: Tx, device_id: int, *, first: int | None, ready_only: bool) -> Command | None:
    """The device's next deliverable command, claimed (``first``: the id a look outside the
    transaction found, tried first); None: nothing is queued."""
    command = store.claim(tx, first) if first is not None else None
    if command is None:
        command = store.claim_next(tx, device_id, ready_only=ready_only)
    return command


def delivered(tx: Tx, command: Command) -> None:
    """``commands.delivered`` of the claimed ``command``."""
    event = None
    if command.attempts == 1:  # its first delivery: journaled and reported
        event = events.event_values(
            COMMAND_DELIVERED, device_id=command.device_id, command=command.guid, command_type=command.type
        )
    store.mark_delivered(tx, command.id, event)


def complete(
    tx: Tx, command: Command, *, success: bool, info: str | None, data: dict[str, Any] | None
) -> bool | None:
    """``complete(take=True)`` of ``command`` as this process delivered it
    (``mdm.core.in_flight``): whether the device has another command queued; None, nothing
    written, when it is not in flight with the status and deliveries it was delivered with."""
    values, journal, event = commands.completion(command, success=success, info=info, data=data)
    return store.take_and_finish(tx, command, values, journal, event)
