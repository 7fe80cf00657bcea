"""The command channel's common round trip on SQLite without SQLAlchemy's session
(``mdm.core.delivery_sqlite``): an Idle poll that hands out a plain command, and the final
answer to a command this process delivered that changes nothing but the command, each one write
transaction straight on the sqlite3 connection. Anything else (a command that needs translating
or an UnlockToken, a NotNow, a step that is not the last, an answer that changes the device, a
command changed since its delivery, another process holding SQLite's write lock) returns None
with nothing written: ``mdm.ios.channel`` then runs its transactional path, which decides as
before.
"""

from __future__ import annotations

from mdm.core import delivery_sqlite, in_flight
from mdm.core.identity import Binding
from mdm.db.engine import Database
from mdm.ios import command_steps
from mdm.ios.channel_direct import kept_for_answer, plain_final, plain_message
from mdm.ios.messages import CommandReport

supported = delivery_sqlite.supported


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
    if kept_for_answer(db.engine, command):
        in_flight.remember(db.engine, command)
    return body


async def answer(db: Database, binding: Binding, report: CommandReport) -> bool | None:
    """Record the final answer to a command this process delivered that changes nothing but the
    command: whether the device has another command queued; None: take the transactional path."""
    if report.command_uuid is None or report.status == "NotNow":
        return None
    guid, _ = command_steps.split_command_uuid(report.command_uuid)
    command = in_flight.take(db.engine, guid)
    if command is None:
        return None
    final = plain_final(command, binding, report)
    if final is None:
        return None
    success, info, data = final
    async with delivery_sqlite.transaction(db) as tx:
        if tx is None:
            in_flight.remember(db.engine, command)  # for the transactional path's write
            return None
        others = delivery_sqlite.complete(tx, command, success=success, info=info, data=data)
        if others is None:
            tx.rollback()
    return others
