"""Test helpers for "no write transaction holds SQLite's write queue across a turn of the loop":
``record_holds`` collects how long each write transaction held the queue, ``busy_loop`` keeps
the event loop busy for ``turn`` seconds per turn (other requests' work) while a block runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from mdm.db.engine import Database


def record_holds(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds each write transaction (on any ``Database``) holds the queue, from now on."""
    held: list[float] = []
    measured = Database._measured

    def record(self: Database, waited: float, hold: float, behind: int, lock_wait: float) -> None:
        held.append(hold)
        measured(self, waited, hold, behind, lock_wait)

    monkeypatch.setattr(Database, "_measured", record)
    return held


@contextlib.asynccontextmanager
async def busy_loop(turn: float = 0.1) -> AsyncIterator[None]:
    """Another task blocks the loop ``turn`` seconds per turn while the block runs."""
    busy = True

    async def hog() -> None:
        while busy:
            time.sleep(turn)  # the loop's turn: other requests' work
            await asyncio.sleep(0)

    hogging = asyncio.ensure_future(hog())
    await asyncio.sleep(0)
    try:
        yield
    finally:
        busy = False
        await hogging


class Turns:
    count = 0


@contextlib.asynccontextmanager
async def counting_turns() -> AsyncIterator[Turns]:
    """How many turns the event loop has made since the block began (``.count``, live)."""
    turns = Turns()
    running = True

    async def count() -> None:
        while running:
            turns.count += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count())
    await asyncio.sleep(0)
    try:
        yield turns
    finally:
        running = False
        await counter
