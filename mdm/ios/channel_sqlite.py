"""The command channel's common round trip on SQLite without SQLAlchemy's session
(``mdm.core.delivery_sqlite``): an Idle poll that hands out a plain command, and the final
answer to a command that changes nothing but the command or is an inventory answer, each one
write transaction straight on the sqlite3 connection.

An inventory answer (DeviceInformation's QueryResponses, SecurityInfo, the application and
profile lists) writes what ``mdm.ios.channel``'s transactional path writes, in its order:
the device's fact columns read, one UPDATE of the inventory part and the changed columns,
``inventory_updated``, then the command taken out of the queue (only if it is still in flight
with the status and deliveries it was delivered with: it is not read, ``mdm.core.in_flight``
keeps it from its delivery as for a plain answer), finished, journaled and
``command_completed``. The device's columns are read in the write transaction, which holds
SQLite's lock: the same ``inventory.answer_update`` of the same row as the transactional path.

Anything else (a command that needs translating or an UnlockToken, a NotNow, a step that is not
the last, an erase or a removal, a command changed since its delivery, another process holding
SQLite's write lock) returns None with nothing written: ``mdm.ios.channel`` then runs its
transactional path, which decides as before.
"""

from __future__ import annotations

from mdm.core import delivery_sqlite, events, in_flight
from mdm.core.identity import Binding
from mdm.db.engine import Database
from mdm.db.models import Command
from mdm.db.sqlite_direct import Tx
from mdm.ios import command_steps, inventory
from mdm.ios import store_inventory_sqlite as store
from mdm.ios.channel_direct import changed_device, kept_for_answer, outcome, plain_final, plain_message
from mdm.ios.event_types import INVENTORY_UPDATED
from mdm.ios.messages import CommandReport

supported = delivery_sqlite.supported


def _inventory_request(command: Command) -> bool:
    """Whether the step due now asks for an inventory part (its answer is written here too)."""
    request_type = command_steps.current_step(command).get("RequestType")
    return command.type != "Remove" and request_type in inventory.PART_NAMES


async def deliver(db: Database, device_id: int, *, first: int | None, ready_only: bool) -> bytes | None:
    """The message of the device's next command, now in flight; b"" when nothing is queued;
    None: take the transactional path."""
    async with delivery_sqlite.transaction(db) as tx:
        if tx is None:
            return None
        command = delivery_sqlite.claim(tx, device_id, first=first, ready_only=ready_only)
        if command is None:
            return b""
        body = plain_message(command)
        if body is None:
            tx.rollback()  # the transactional path fails it, or adds what it needs
            return None
        delivery_sqlite.delivered(tx, command)
    if kept_for_answer(db.engine, command) or _inventory_request(command):
        in_flight.remember(db.engine, command)
    return body


def inventory_final(command: Command, binding: Binding, report: CommandReport) -> str | None:
    """The RequestType when ``report`` is the final acknowledged answer of an inventory step of
    ``command`` (this device's, not replayed); None otherwise."""
    if report.status != "Acknowledged" or report.command_uuid is None:
        return None
    if command.device_id != binding.device_id or command.type == "Remove":
        return None
    step = command_steps.answered_step(command, report.command_uuid)
    if step is None or not step[1]:
        return None
    request_type = changed_device(command, report, step[0])
    return request_type if request_type in inventory.PART_NAMES else None


def _record(tx: Tx, command: Command, binding: Binding, report: CommandReport) -> bool | None:
    """The answer written in ``tx`` as the transactional path writes it: whether the device has
    another command queued; None when this is not an answer written here, or the command is no
    longer in flight as read (the caller rolls back)."""
    final = plain_final(command, binding, report)
    if final is not None:
        success, info, data = final
        return delivery_sqlite.complete(tx, command, success=success, info=info, data=data)
    request_type = inventory_final(command, binding, report)
    if request_type is None:
        return None
    # As ``channel._answered`` and ``_acknowledged``: the outcome, the device's facts, the command.
    success, info, data = outcome(report)
    current = store.device_columns(tx, binding.device_id)
    update = None if current is None else inventory.answer_update(current, request_type, report.result)
    if update is not None:
        store.write_inventory(tx, binding.device_id, update.part, update.entry, update.changes)
        store.insert_event(tx, events.event_values(
            INVENTORY_UPDATED, device_id=binding.device_id, part=update.part, count=update.count
        ))
    return delivery_sqlite.complete(tx, command, success=success, info=info, data=data)


async def answer(db: Database, binding: Binding, report: CommandReport) -> bool | None:
    """Record the final answer to a command that changes nothing but the command, or an
    inventory answer with its facts: whether the device has another command queued; None: take
    the transactional path."""
    if report.command_uuid is None or report.status == "NotNow":
        return None
    guid, _ = command_steps.split_command_uuid(report.command_uuid)
    kept = in_flight.take(db.engine, guid)
    if kept is None:
        return None  # not delivered by this process: the transactional path reads it
    if plain_final(kept, binding, report) is None and inventory_final(kept, binding, report) is None:
        return None
    async with delivery_sqlite.transaction(db) as tx:
        if tx is None:
            in_flight.remember(db.engine, kept)  # for the transactional path's write
            return None
        others = _record(tx, kept, binding, report)
        if others is None:
            tx.rollback()
    return others
