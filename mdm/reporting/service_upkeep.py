"""What the delivering replica does beside delivery: dead-letter events older than
``dead_letter_after_seconds``, delete delivered events older than ``retention_seconds``, refresh
the backlog figures (metrics and the link-state row every replica's light reads).

Every write is a chunk of its own transaction (``CHUNK`` rows, selected through an index), and a
pass stops after ``PASS_BUDGET_SECONDS``: never a fleet-sized statement, never the SQLite write
queue held for long. The chunks run inline (on the event loop's thread, ``Database.transaction``):
through aiosqlite's thread a chunk waited for turns of a busy loop while it held SQLite's write
queue (1.8 s for a prune that found nothing, in a check-in storm); 100 rows by key are a few
milliseconds of the loop's time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import store_outbox as outbox
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.reporting import metrics
from mdm.reporting import store as link_store
from mdm.reporting.config import ReportingConfig
from mdm.reporting.link import LinkMonitor

log = logging.getLogger("mdm.reporting")

CHUNK = 100
PASS_BUDGET_SECONDS = 20.0
SWEEP_SECONDS = 30.0  # age-based dead letters and the retention prune, this often
PUBLISH_SECONDS = 5.0  # the backlog figures and the link row, this often
COUNT_CAP = 1_000_000
Chunk = Callable[[AsyncSession], Awaitable[int]]
AGED_OUT = "aged out: undelivered after dead_letter_after_seconds"


class Upkeep:
    def __init__(self, db: Database, settings: ReportingConfig, link: LinkMonitor, *, delivering: bool,
                 chunk: int = CHUNK, sweep_seconds: float = SWEEP_SECONDS,
                 publish_seconds: float = PUBLISH_SECONDS) -> None:
        self.db = db
        self.settings = settings
        self.link = link
        # Transport "none": nothing is delivered, so nothing ages out and no link row is kept.
        self.delivering = delivering
        self.chunk = chunk
        self.sweep_seconds = sweep_seconds
        self.publish_seconds = publish_seconds

    async def run(self) -> None:
        """Until cancelled: sweep and prune every ``sweep_seconds``, publish every
        ``publish_seconds``. A database failure is logged and tried again at the next turn."""
        next_sweep = 0.0
        while True:
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_seconds
                    if self.delivering:
                        await self.dead_letter_aged()
                    await self.prune()
                await self.publish()
            except Exception:
                log.exception("outbox upkeep failed; tried again in %.0f s", self.publish_seconds)
            await asyncio.sleep(self.publish_seconds)

    async def dead_letter_aged(self) -> int:
        """Dead-letter undelivered events older than ``dead_letter_after_seconds``."""
        now = utcnow()
        cutoff = now - timedelta(seconds=self.settings.dead_letter_after_seconds)
        total = await self._chunks(lambda s: outbox.dead_letter_older(s, cutoff, self.chunk, AGED_OUT, now))
        if total:
            metrics.DEAD_LETTERED.labels("age").inc(total)
            log.warning("outbox: %d event(s) undelivered for %.0f s were dead-lettered", total,
                        self.settings.dead_letter_after_seconds)
        return total

    async def prune(self) -> int:
        """Delete delivered events older than ``retention_seconds``."""
        cutoff = utcnow() - timedelta(seconds=self.settings.retention_seconds)
        total = await self._chunks(lambda s: outbox.prune_delivered(s, cutoff, self.chunk))
        if total:
            metrics.PRUNED.inc(total)
            log.info("outbox: %d delivered event(s) past retention deleted", total)
        return total

    async def _chunks(self, one: Chunk) -> int:
        started = time.monotonic()
        total = 0
        while time.monotonic() - started < PASS_BUDGET_SECONDS:
            async with self.db.transaction(inline=True) as session:
                done = await one(session)
            total += done
            if done < self.chunk:
                break
            await asyncio.sleep(0)  # let requests in between chunks
        return total

    async def publish(self) -> None:
        """The backlog figures: metrics, and (when delivering) the link-state row."""
        now = utcnow()
        async with self.db.session() as session:
            backlog, oldest = await outbox.backlog(session, COUNT_CAP)
            dead = await outbox.dead_count(session, COUNT_CAP)
        self.link.backlog, self.link.oldest, self.link.dead_letters = backlog, oldest, dead
        metrics.BACKLOG.set(backlog)
        metrics.OLDEST_AGE.set(0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()))
        metrics.DEAD_LETTERS.set(dead)
        metrics.LINK_UP.set(1 if self.link.up else 0)
        if self.delivering:
            async with self.db.transaction(inline=True) as session:
                await link_store.write(session, self.link.snapshot(now))
