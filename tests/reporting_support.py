"""What the reporting tests share (no tests here): a core server behind the ``Transport`` seam
that de-duplicates by uuid as the documented receivers do, with scripted outages and refusals;
settings; outbox rows; the worker's rounds until the outbox is empty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from event_rows import outbox_row
from sqlalchemy import select

from mdm.core import store_outbox
from mdm.db.engine import Database
from mdm.db.leader_lock import FileLock
from mdm.db.models import Event
from mdm.reporting.config import ReportingConfig
from mdm.reporting.seams import OutboundEvent, Outcome, SendResult
from mdm.reporting.service import OutboxWorker


class Receiver:
    """A receiver: keeps what arrives (duplicates included) and what it accepted (by uuid, first
    arrival), answers scripted outages first, and refuses the events in ``refuse``: the whole batch
    that holds one (``named=False``, as an endpoint that validates a batch at once) or only those,
    named (``named=True``)."""

    name = "fake"

    def __init__(self) -> None:
        self.arrivals: list[OutboundEvent] = []
        self.accepted: dict[str, OutboundEvent] = {}
        self.outages: list[SendResult] = []
        self.refuse: set[str] = set()
        self.named = False
        self.log: list[tuple[str, int]] = []  # ("ok" | "refused", event id) in order
        self.hang_on_send: int | None = None  # accept the n-th batch (1-based), then never answer
        self.hanging = asyncio.Event()
        self.sends = 0
        self.send_times: list[float] = []  # time.monotonic() of each send
        self.closed = False

    async def send(self, batch: Sequence[OutboundEvent]) -> SendResult:
        self.sends += 1
        self.send_times.append(time.monotonic())
        if self.outages:
            return self.outages.pop(0)
        bad = {e.uuid for e in batch} & self.refuse
        if bad and not self.named:
            self.log += [("refused", e.id) for e in batch if e.uuid in bad]
            return SendResult(Outcome.REJECTED, "http_400", "schema violation")
        for e in batch:
            if e.uuid in bad:
                self.log.append(("refused", e.id))
                continue
            self.arrivals.append(e)
            self.log.append(("ok", e.id))
            self.accepted.setdefault(e.uuid, e)
        if self.sends == self.hang_on_send:
            self.hanging.set()
            await asyncio.Event().wait()
        if bad:
            return SendResult(Outcome.REJECTED, "http_422", "refused one by one", rejected=frozenset(bad))
        return SendResult(Outcome.DELIVERED)

    async def aclose(self) -> None:
        self.closed = True

    def accepted_ids(self) -> list[int]:
        return [e.id for e in self.accepted.values()]


def settings(**overrides: Any) -> ReportingConfig:
    values: dict[str, Any] = {
        "transport": "generic", "url": "https://core.example.test/events", "batch_size": 100,
        "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05, "poll_seconds": 0.05,
    }
    values.update(overrides)
    return ReportingConfig(**values)


def worker(db: Database, receiver: Receiver | None, tmp: Path, **overrides: Any) -> OutboxWorker:
    lock = FileLock(tmp / "reporting.lock")
    return OutboxWorker(db, receiver, settings(**overrides), lock, deliverer="test:1")


async def add_events(db: Database, specs: Sequence[tuple[str, int | None]],
                     created_at: datetime | None = None) -> list[int]:
    """Outbox rows of (type, device id), in this order; their ids."""
    async with db.transaction() as session:
        rows = [outbox_row(session, kind, device_id=device) for kind, device in specs]
        if created_at is not None:
            for row in rows:
                row.created_at = created_at
        await session.flush()
        return [r.id for r in rows]


async def rows(db: Database) -> dict[int, Event]:
    async with db.session() as session:
        return {e.id: e for e in (await session.scalars(select(Event).order_by(Event.id))).all()}


async def pending_ids(db: Database) -> list[int]:
    async with db.session() as session:
        return [e.id for e in await store_outbox.pending(session, 10_000)]


async def drain(w: OutboxWorker, db: Database, rounds: int = 200) -> None:
    """Run the worker's rounds (pauses shortened) until nothing waits."""
    for _ in range(rounds):
        if not await pending_ids(db):
            return
        pause = await w.step()
        await asyncio.sleep(min(pause, 0.01))
    raise AssertionError("the outbox did not drain")
