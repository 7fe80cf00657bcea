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


@contextmanager
def sent_in_write_transactions(db: Database, monkeypatch: Any) -> Iterator[list[str]]:
    """Every statement sent while one of ``db``'s write transactions (``Database.transaction``)
    is open (for checks that a long read runs outside SQLite's writer)."""
    from contextlib import asynccontextmanager

    writing = False
    seen: list[str] = []
    plain = db.transaction

    @asynccontextmanager
    async def tracked(*args: Any, **kwargs: Any) -> Any:
        nonlocal writing
        async with plain(*args, **kwargs) as session:
            writing = True
            try:
                yield session
            finally:
                writing = False

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if writing:
            seen.append(statement)

    monkeypatch.setattr(db, "transaction", tracked)
    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
        monkeypatch.setattr(db, "transaction", plain)
