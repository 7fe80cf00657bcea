"""The SELECT statements a piece of code sends, captured at the engine (for query-plan and
statement-count checks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from mdm.db.engine import Database


@contextmanager
def selects(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The (statement, parameters) of every SELECT sent while the block runs."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)


def in_a_worker() -> bool:
    """True when the statement or checkout at hand comes from one of the server's background
    workers (and the tasks they start), which the runtime names ``worker:...``: they run at any
    time and are not the request's doing."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on the loop's thread
        return False
    return task is not None and task.get_name().startswith("worker:")
