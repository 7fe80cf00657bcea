"""The single-device enqueue on PostgreSQL without a transaction block (``mdm.db.prepared.autocommit``).

``command_enqueue.enqueue_one`` in a transaction costs four round trips to the database (BEGIN, the
device's facts, the one statement that writes the command with its journal entry, queue row,
events and NOTIFY, COMMIT) and a session around them. That one statement is atomic by itself, and
the facts read before it decide nothing the statement does not check again (the one-active-per-
type rule is its ``ON CONFLICT``), so here it runs on its own: two round trips, no session.

Only the common case: a device whose command translates from its facts (``bulk_key``), of a
protocol whose pusher is not an ``OwingPusher``, or is one that owes the wake-up as a part of that
statement (``PartOwingPusher``, the push dispatcher: its ``push_wakeups`` row is written by the
same statement, only with the command); another ``OwingPusher``'s row must commit in the
enqueue's transaction: ``CommandService`` then runs the transactional path. Anything else
returns None having written nothing, and so does a device with an active command of that type (the
transactional path answers the conflict with the command it names) or no device at all (it
answers 404): the caller runs ``command_enqueue.enqueue_one``, which decides as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mdm.core import command_enqueue, library, queue_hint, store_enqueue
from mdm.core.library import Translators
from mdm.core.push import OwedPart
from mdm.db import audit_context
from mdm.db.models import Command, CommandJournalEntry, Protocol
from mdm.db.prepared import Direct


async def enqueue_one(
    conn: Direct,
    device_id: int,
    type_name: str,
    args: dict[str, Any] | None,
    *,
    created_by: str | None,
    translators: Translators,
    plain: Callable[[Protocol], bool],
    owed: Callable[[Protocol], OwedPart | None],
) -> tuple[Command, CommandJournalEntry, Protocol] | None:
    """``command_enqueue.enqueue_one`` as one committed statement after a read, or None (nothing
    written) when this path does not apply; ``plain(protocol)``: whether a wake-up of the device
    needs nothing in the enqueue's transaction, else ``owed(protocol)``: the wake-up as a part of
    the statement (None: this path does not apply)."""
    ctype = library.lookup(type_name)
    args = dict(args or {})
    facts = await store_enqueue.device_facts_direct(conn, device_id)
    if facts is None:
        return None
    protocol = Protocol(facts.protocol)
    if protocol not in ctype.protocols:
        return None
    owes = not plain(protocol)
    part = owed(protocol) if owes else None
    if owes and part is None:
        return None
    if translators.bulk_key(ctype, args, protocol) is None:
        return None  # the translation reads the whole device
    device = facts.as_device()
    values, journaled, event = command_enqueue.single_rows(ctype, args, device, created_by, translators)
    pending = audit_context.claim(None)
    audit = pending.values(pending) if pending is not None and pending.values is not None else None
    command_id = await store_enqueue.insert_command_direct(conn, values, journaled, event, audit, part)
    if command_id is None:
        return None
    if pending is not None:
        pending.written = True  # committed with the command (the statement is its transaction)
    queue_hint.invalidate_everywhere(device_id)
    command, first = command_enqueue.single_written(command_id, values, journaled)
    return command, first, protocol
