"""The discovery worker: one replica discovers at a time (``mdm.db.leader_lock``), every
``discovery_interval_seconds`` and on demand (``request``: any replica sets
``eas_discovery.requested_at``; the leader sees it at its next poll, at once when it is the
replica that was asked). A failing run is logged and retried at the next interval; nothing here
ends the worker but cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from mdm.db.engine import Database
from mdm.db.leader_lock import LeaderLock
from mdm.db.models import utcnow
from mdm.eas import store
from mdm.eas.config import EasConfig
from mdm.eas.seams import CmdletRunner
from mdm.eas.service_discovery import Discovery, RunResult
from mdm.eas.tables import EasDiscovery

log = logging.getLogger("mdm.eas.discovery")

# pg_try_advisory_lock's key: "mdm-eas" folded into a bigint (the outbox uses "mdm-out").
DISCOVERY_LOCK_KEY = 0x6D646D_656173
DISCOVERY_LOCK_FILE = "eas-discovery.lock"
POLL_SECONDS = 2.0


class DiscoveryWorker:
    def __init__(
        self,
        db: Database,
        runner: Callable[[], CmdletRunner | None],
        config: Callable[[], EasConfig],
        lock: LeaderLock,
        *,
        poll_seconds: float = POLL_SECONDS,
        name: str | None = None,
    ) -> None:
        self.db, self._runner, self._config, self.lock = db, runner, config, lock
        self.poll_seconds = poll_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self.running = False
        self.runs = 0

    def wake(self) -> None:
        self._wake.set()

    async def request(self, *, by: str) -> EasDiscovery | None:
        """Ask for a run now (any replica), and wake the local worker."""
        async with self.db.transaction() as session:
            await store.request(session, by=by, now=utcnow())
        self.wake()
        return await self.state()

    async def state(self) -> EasDiscovery | None:
        async with self.db.session() as session:
            return await store.discovery_row(session)

    def _due(self, row: EasDiscovery | None, now: datetime) -> bool:
        if row is None or row.started_at is None or row.requested_at is not None:
            return True
        return now - row.started_at >= timedelta(seconds=self._config().discovery_interval_seconds)

    async def run_once(self) -> RunResult | None:
        """One look: run a discovery if this replica leads and one is due; its result."""
        runner = self._runner()
        if runner is None or (not self._config().enabled and not getattr(runner, "always", False)):
            return None
        if not await self.lock.acquire():
            return None
        if not await self.lock.still_held():
            return None
        if not self._due(await self.state(), utcnow()):
            return None
        settings = self._config()
        discovery = Discovery(
            self.db,
            runner,
            batch=settings.discovery_batch,
            concurrency=settings.concurrency,
            limit_seconds=settings.cmdlet_timeout_seconds,
        )
        self.running = True
        try:
            result = await discovery.run(runner_name=self.name)
        finally:
            self.running = False
        self.runs += 1
        return result

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker outlives any one failure (the database away, a bug)
                log.exception("eas discovery: the run stopped; retrying at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()

    async def release(self) -> None:
        await self.lock.release()
