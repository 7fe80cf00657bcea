"""Delivery and final answer of a command on PostgreSQL without a transaction block.

The same life cycle as ``claim`` + ``delivered`` and ``complete(take=True)`` in
``mdm.core.commands`` (the same rows, journal entries and events, in the same order), for the
common case only, on a connection from ``mdm.db.prepared.autocommit``: the command is read
without a lock, the protocol works out its message or the answer's outcome, and one statement
writes it all if the command is still as it was read (``store_delivery_direct``). When it is not
(another request or a recall got there first), or for anything else (a NotNow, a step that is not
the last, an erase or removal, an inventory answer whose facts depend on the row as stored, a
command that needs translating at delivery), the caller runs the transactional path, which
decides as before. Nothing is written in that case. An inventory answer is recorded with its
device's facts in the same one statement (``complete_describing``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, events, store_delivery
from mdm.core import store_delivery_direct as store
from mdm.core.event_types import COMMAND_DELIVERED
from mdm.core.store_facts_direct import FactsWrite as FactsWrite
from mdm.core.store_facts_direct import take_finish_and_describe
from mdm.db.models import Command
from mdm.db.prepared import Direct
from mdm.db.prepared import autocommit as autocommit
from mdm.db.prepared import autocommits as autocommits


async def next_command(conn: Direct, device_id: int, *, ready_only: bool) -> Command | None:
    """The device's next deliverable command as it is now (nothing claimed), or None when none
    is queued (``ready_only``: none that a NotNow deferred)."""
    return await store.next_command(conn, device_id, ready_only=ready_only)


async def command_by_guid(conn: Direct, guid: str) -> Command | None:
    return await store.command_by_guid(conn, guid)


async def delivered(conn: Direct, command: Command) -> bool:
    """``claim`` + ``delivered`` of ``command`` as read by ``next_command``, in one statement:
    False (nothing written) when a concurrent request claimed or recalled it meanwhile."""
    event: dict[str, Any] | None = None
    if command.attempts == 0:  # its first delivery: journaled and reported
        event = events.event_values(
            COMMAND_DELIVERED, device_id=command.device_id, command=command.guid, command_type=command.type
        )
    return await store.deliver(conn, command, event)


async def complete(
    conn: Direct, command: Command, *, success: bool, info: str | None, data: dict[str, Any] | None
) -> bool | None:
    """``complete(take=True)`` of ``command`` as read by ``command_by_guid``, in one statement:
    whether the device has another command queued; None (nothing written) when the command is
    not in flight with the status and deliveries it was read with."""
    values, journal, event = commands.completion(command, success=success, info=info, data=data)
    return await store.take_and_finish(conn, command, values, journal, event)


async def complete_describing(
    conn: Direct,
    command: Command,
    *,
    success: bool,
    info: str | None,
    data: dict[str, Any] | None,
    facts: FactsWrite,
) -> bool | None:
    """``complete`` with ``facts`` written to the command's device (an inventory answer), in
    the same one statement: whether the device has another command queued; None (nothing
    written) when the command is not in flight with the status and deliveries it was read or
    delivered with."""
    values, journal, event = commands.completion(command, success=success, info=info, data=data)
    return await take_finish_and_describe(conn, command, values, journal, event, facts)


async def complete_known(
    session: AsyncSession,
    command: Command,
    *,
    success: bool,
    info: str | None,
    data: dict[str, Any] | None,
) -> bool:
    """``complete(take=True)`` in the caller's transaction of ``command`` as this process
    delivered it (``mdm.core.in_flight``), not read: False, nothing written, when the command is
    not in flight with the status and deliveries it was delivered with (the caller then reads it
    and decides as before)."""
    values, journal, event = commands.completion(command, success=success, info=info, data=data)
    return await store_delivery.take_and_finish(session, command, values, journal, event, guarded=True)
