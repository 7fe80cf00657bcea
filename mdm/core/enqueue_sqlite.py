"""The single-device enqueue on SQLite without SQLAlchemy's session (``mdm.db.sqlite_direct``).

``command_enqueue.enqueue_one`` in ``Database.transaction(inline=True)`` pays for an
``AsyncSession``, a pool checkout, a greenlet hand-off per statement and the session's commit
around six statements by key that decide nothing in between. Here the same statements (the
device's facts, then ``store_enqueue_sqlite.insert_command``: command, journal entry,
``command_created``, queue row, the request's ``admin_action``) run between ``BEGIN IMMEDIATE``
and ``COMMIT`` on the kept connection, holding the same write queue.

Only the common case, as ``enqueue_direct`` on PostgreSQL: a device whose command translates from
its facts (``bulk_key``), of a protocol whose pusher needs nothing in the enqueue's transaction
(not an ``OwingPusher``) or can owe the wake-up as a statement of it (an ``OwedPart``: the push
dispatcher's row, after the command's). Anything else returns None having written nothing
(rolled back), and so does a device with an active command of that type (the transactional path
answers the conflict with the command it names), no device at all (404 there), or a write lock
held by another process (the transactional path waits for it): the caller runs
``command_enqueue.enqueue_one``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mdm.core import command_enqueue, library, queue_hint
from mdm.core import store_enqueue_sqlite as store
from mdm.core.library import Translators
from mdm.core.push import OwedPart
from mdm.db import audit_context, sqlite_direct
from mdm.db.models import Command, CommandJournalEntry, Protocol
from mdm.db.sqlite_direct import Database

supported = sqlite_direct.supported


async def enqueue_one(
    db: Database,
    device_id: int,
    type_name: str,
    args: dict[str, Any] | None,
    *,
    created_by: str | None,
    translators: Translators,
    plain: Callable[[Protocol], bool],
    owed: Callable[[Protocol], OwedPart | None],
) -> tuple[Command, CommandJournalEntry, Protocol] | None:
    """``command_enqueue.enqueue_one`` in one ``sqlite_direct`` transaction, or None (nothing
    written) when this path does not apply; ``plain(protocol)``: whether a wake-up of the device
    needs nothing in the enqueue's transaction, else ``owed(protocol)``: the wake-up as a
    statement of it (None: this path does not apply)."""
    ctype = library.lookup(type_name)
    args = dict(args or {})
    pending = None
    async with sqlite_direct.transaction(db) as tx:
        if tx is None:
            return None
        facts = store.device_facts(tx, device_id)
        protocol = Protocol(facts.protocol) if facts is not None else None
        part = owed(protocol) if protocol is not None and not plain(protocol) else None
        if (
            facts is None or protocol is None or protocol not in ctype.protocols
            or (part is None and not plain(protocol))
            or translators.bulk_key(ctype, args, protocol) is None  # it reads the whole device
        ):
            tx.rollback()
            return None
        values, journaled, event = command_enqueue.single_rows(
            ctype, args, facts.as_device(), created_by, translators
        )
        pending = audit_context.claim(None)
        audit = pending.values(pending) if pending is not None and pending.values is not None else None
        if audit is not None and audit.keys() != store.EVENT_KEYS:
            tx.rollback()  # not a plain outbox row: the session's path writes it
            return None
        command_id = store.insert_command(tx, values, journaled, event, audit, part)
        if command_id is None:
            tx.rollback()
            return None
        queue_hint.invalidate_everywhere(device_id)
    # Committed (an exception or a failed COMMIT leaves the block otherwise).
    if pending is not None:
        pending.written = True
    queue_hint.invalidate_everywhere(device_id)  # as the queue row's ORM listeners, at commit
    command, first = command_enqueue.single_written(command_id, values, journaled)
    return command, first, protocol
