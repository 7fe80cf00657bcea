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
def write_transactions(db: Database, monkeypatch: Any) -> Iterator[list[list[str]]]:
    """The statements sent in each of ``db``'s write transactions (``Database.transaction``)
    opened while the block runs, one list per transaction."""
    from contextlib import asynccontextmanager

    transactions: list[list[str]] = []
    current: list[str] | None = None
    plain = db.transaction

    @asynccontextmanager
    async def tracked(*args: Any, **kwargs: Any) -> Any:
        nonlocal current
        current = []
        transactions.append(current)
        try:
            async with plain(*args, **kwargs) as session:
                yield session
        finally:
            current = None

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if current is not None:
            current.append(statement)

    monkeypatch.setattr(db, "transaction", tracked)
    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        yield transactions
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
        monkeypatch.setattr(db, "transaction", plain)


@contextmanager
def sent_in_write_transactions(db: Database, monkeypatch: Any) -> Iterator[list[str]]:
    """Every statement sent while one of ``db``'s write transactions is open (for checks that a
    long read runs outside SQLite's writer); the list is filled when the block ends."""
    sent: list[str] = []
    with write_transactions(db, monkeypatch) as transactions:
        try:
            yield sent
        finally:
            sent.extend(statement for transaction in transactions for statement in transaction)
