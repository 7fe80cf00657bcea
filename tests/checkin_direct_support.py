"""Shared by the tests of PostgreSQL's check-ins without a transaction block (TokenUpdate,
Authenticate): transactions counted on the server's engine, and a real change put between the
direct path's unlocked read and its guarded write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from mdm.server.runtime import Server


class Transactions:
    """Transactions begun on the server's engine on connections that ran a statement containing
    ``marker`` (the server's workers run transactions of their own meanwhile)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.connections: set[int] = set()
        self.begun: list[int] = []

    def statement(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.marker in statement:
            self.connections.add(id(conn))

    def begin(self, conn: Any) -> None:
        self.begun.append(id(conn))

    def count(self) -> int:
        return sum(1 for conn in self.begun if conn in self.connections)

    def reset(self) -> None:
        self.connections.clear()
        self.begun.clear()


@contextmanager
def counting(server: Server, marker: str) -> Iterator[Transactions]:
    counted = Transactions(marker)
    engine = server.ctx.db.engine.sync_engine
    hooks = (("before_cursor_execute", counted.statement), ("begin", counted.begin))
    for name, hook in hooks:
        event.listen(engine, name, hook)
    try:
        yield counted
    finally:
        for name, hook in hooks:
            event.remove(engine, name, hook)


def change_after_read(
    monkeypatch: pytest.MonkeyPatch, module: Any, read: str, change: Callable[[], Awaitable[None]]
) -> list[int]:
    """Run ``change`` (a real write on another connection) once, right after the direct path's
    read ``module.read``; the list counts the reads."""
    reads: list[int] = []
    real = getattr(module, read)

    async def read_then_change(*args: Any) -> Any:
        state = await real(*args)
        if not reads:
            await change()
        reads.append(1)
        return state

    monkeypatch.setattr(module, read, read_then_change)
    return reads
