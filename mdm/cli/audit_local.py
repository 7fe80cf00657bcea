"""The audit event of a local CLI action that changes only files of the data directory (the push
certificate, the CA keys' encryption): no row of its own to commit with, so the ``admin_action``
event of the OS user is written in a transaction of its own once the files are in place. Actions
that change the database run inside ``mdm.core.audit.local_action`` instead.

Imported only by the commands that use it (the database stack is not light)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from mdm.cli import output
from mdm.config import Config
from mdm.core import audit
from mdm.db.engine import Database, DatabaseUnavailable


def record_file_change(config: Config, operation: str, **target: Any) -> bool:
    """Write the event; database trouble is a warning on stderr, not a failure (the files are the
    change). No database yet (before ``mdm init``): nothing is written. True when written."""
    if not config.database.url and not (config.data_path / "mdm.sqlite3").exists():
        return False  # before `mdm init`: no outbox to record into (and none to create here)

    async def write() -> None:
        db = Database(config.database_url, config.database.pool_size)
        try:
            await db.check(timeout=5)
            async with db.transaction() as session:
                audit.record_local(session, operation, **target)
        finally:
            await db.close()

    try:
        asyncio.run(write())
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        lines = str(getattr(exc, "orig", None) or exc).splitlines()
        first = lines[0][:200] if lines else type(exc).__name__
        output.note(f"warning: the audit event of {operation} was not recorded ({first})")
        return False
    return True
