"""A new command: translated for its device, refused if the device already has an active one of
its type, written with its first journal entry and its ``command_created`` event.

``enqueue``/``enqueue_logged`` write through the ORM session (a device loaded); ``enqueue_one``
(the admin API's single-device enqueue) writes with prebuilt statements (``store_enqueue``);
``single_rows``/``single_written`` are its rows, for ``enqueue_direct`` as well. What happens to
the command afterwards is ``mdm.core.commands``.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import devices, events, library, store_enqueue
from mdm.core import store_commands as store
from mdm.core.errors import Conflict, NotFound
from mdm.core.event_types import COMMAND_CREATED
from mdm.core.library import Translators
from mdm.db.models import Command, CommandJournalEntry, CommandStatus, Device, Protocol, utcnow


async def enqueue(
    session: AsyncSession,
    device: Device,
    type_name: str,
    args: dict[str, Any] | None = None,
    *,
    created_by: str | None = None,
    translators: Translators,
) -> Command:
    """Queue one command; Conflict if the device already has an active command of that type.

    ``translators``: the platforms' command translators (``ServerContext.translators``)."""
    command, _ = await enqueue_logged(
        session, device, type_name, args, created_by=created_by, translators=translators
    )
    return command


async def enqueue_logged(
    session: AsyncSession,
    device: Device,
    type_name: str,
    args: dict[str, Any] | None = None,
    *,
    created_by: str | None = None,
    translators: Translators,
) -> tuple[Command, CommandJournalEntry]:
    """``enqueue`` that also returns the command's first journal entry (what the API answers
    with, so that nothing is read back)."""
    ctype = library.lookup(type_name)
    args = dict(args or {})
    payload = translators.translate(ctype, args, device)
    values = _new_command(ctype, args, payload, device, created_by, translators)
    command = await store.insert_unless_active(session, values)
    if command is None:
        raise await _busy(session, device.id, ctype)
    detail = _queued_detail(payload, device, translators)
    first = store.add_journal(session, command.id, CommandStatus.PROCESSING.value, detail)
    events.emit(
        session,
        COMMAND_CREATED,
        device_id=device.id,
        command=command.guid,
        command_type=command.type,
        created_by=created_by,
    )
    return command, first


async def enqueue_one(
    session: AsyncSession,
    device_id: int,
    type_name: str,
    args: dict[str, Any] | None = None,
    *,
    created_by: str | None = None,
    translators: Translators,
) -> tuple[Command, CommandJournalEntry, Protocol]:
    """``enqueue_logged`` for a device given by id (NotFound if there is none), written with
    prebuilt statements (``store_enqueue``): the device is read as the few facts a translation
    reads when its translator says they are enough (``bulk_key``: as a bulk operation
    translates), else loaded whole. Returns the command and its first journal entry (neither is
    in the session: nothing is read back) and the device's protocol. On PostgreSQL the common
    case may be written outside a transaction block instead: ``mdm.core.enqueue_direct``."""
    ctype = library.lookup(type_name)
    args = dict(args or {})
    facts = await store_enqueue.device_facts(session, device_id)
    if facts is None:
        raise NotFound(f"no device {device_id}")
    protocol = Protocol(facts.protocol)
    key = translators.bulk_key(ctype, args, protocol) if protocol in ctype.protocols else None
    device = facts.as_device() if key is not None else await devices.get(session, device_id)
    values, journaled, event = single_rows(ctype, args, device, created_by, translators)
    # Its queue row and the request's audit event too, by statements (nothing flushed at commit).
    command_id = await store_enqueue.insert_command(session, values, journaled, event)
    if command_id is None:
        raise await _busy(session, device_id, ctype)
    command, first = single_written(command_id, values, journaled)
    return command, first, protocol


def single_rows(
    ctype: library.CommandType, args: dict[str, Any], device: Device, created_by: str | None,
    translators: Translators,
) -> tuple[dict[str, Any], tuple[str, str], dict[str, Any]]:
    """What ``enqueue_one`` writes (nothing is written here): the command's columns, its first
    journal entry (status, detail) and its ``command_created`` outbox row."""
    payload = translators.translate(ctype, args, device)
    values = _new_command(ctype, args, payload, device, created_by, translators)
    event = events.event_values(
        COMMAND_CREATED, device_id=device.id, command=values["guid"], command_type=ctype.name,
        created_by=created_by,
    )
    return values, (CommandStatus.PROCESSING.value, _queued_detail(payload, device, translators)), event


def single_written(
    command_id: int, values: dict[str, Any], journaled: tuple[str, str]
) -> tuple[Command, CommandJournalEntry]:
    """The command ``single_rows`` described, written as ``command_id``, and its journal entry
    (transient objects with their attributes set, as read back: the declarative constructors'
    attribute events cost more than the rest of the answer)."""
    command: Command = _COMMAND.new_instance()
    command.__dict__.update(values)
    command.__dict__["id"] = command_id
    first: CommandJournalEntry = _JOURNAL.new_instance()
    first.__dict__.update(
        command_id=command_id, status=journaled[0], detail=journaled[1], at=values["created_at"]
    )
    return command, first


_COMMAND = Command.__mapper__.class_manager
_JOURNAL = CommandJournalEntry.__mapper__.class_manager


async def _busy(session: AsyncSession, device_id: int, ctype: library.CommandType) -> Conflict:
    existing = await store.active_of_type(session, device_id, ctype.name)
    return Conflict(
        f"device {device_id} already has an active {ctype.name} command"
        + (f" ({existing.guid})" if existing is not None else ""),
        **({"command": existing.guid} if existing is not None else {}),
    )


def _queued_detail(payload: dict[str, Any], device: Device, translators: Translators) -> str:
    return "queued" if payload or translators.get(device.protocol) else (
        "queued; no protocol handler is registered yet, delivery waits for one"
    )


def _new_command(
    ctype: library.CommandType,
    args: dict[str, Any],
    payload: dict[str, Any],
    device: Device,
    created_by: str | None,
    translators: Translators,
) -> dict[str, Any]:
    """The columns of a new command (``store_enqueue.COMMAND_COLUMNS``)."""
    now = utcnow()
    return {
        "guid": str(uuid.uuid4()).upper(),
        "device_id": device.id,
        "type": ctype.name,
        "args": translators.public_args(ctype, args, device),
        "payload": payload,
        "flags": 0,
        "priority": ctype.priority,
        "status": CommandStatus.PROCESSING.value,
        "result_info": None,
        "result_data": None,
        "created_by": created_by,
        "created_at": now,
        "updated_at": now,
        "delivered_at": None,
        "finished_at": None,
        "attempts": 0,
        "active": True,
    }
