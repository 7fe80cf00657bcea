"""Reporting to the core server: the outbox delivery worker (one replica at a time), the dead
letters' service behind the admin API, and the "core_link" light. The transport comes from
``mdm.reporting.transports.open_transport`` (None for ``transport = "none"``: nothing is sent, but
delivered events are still pruned after the retention period and the light is grey)."""

from __future__ import annotations

import os
import socket

from mdm.db.leader_lock import ADVISORY_KEY, LeaderLock, leader_lock
from mdm.reporting.config import ReportingConfig
from mdm.reporting.keys import DEAD_LETTERS, WORKER
from mdm.reporting.service import OutboxWorker
from mdm.reporting.service_dead import DeadLetters
from mdm.reporting.status import CoreLinkSource
from mdm.reporting.transports import open_transport
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

LOCK_FILE = "reporting.lock"


def delivery_lock(ctx: ServerContext) -> LeaderLock:
    """SQLite serves one node: a file lock in DATA_DIR; PostgreSQL: the advisory lock."""
    return leader_lock(ctx.db, ctx.config.data_path, key=ADVISORY_KEY, lock_file=LOCK_FILE)


async def start(ctx: ServerContext) -> None:
    settings = ctx.config.section(ReportingConfig)
    transport = await open_transport(ctx)
    worker = OutboxWorker(ctx.db, transport, settings, delivery_lock(ctx),
                          deliverer=f"{socket.gethostname()}:{os.getpid()}")
    ctx.services[WORKER] = worker
    ctx.services[DEAD_LETTERS] = DeadLetters(ctx.db, worker.wake)
    ctx.status.register(CoreLinkSource(settings.transport))


async def run(ctx: ServerContext) -> None:
    await ctx.services[WORKER].run()


async def stop(ctx: ServerContext) -> None:
    worker = ctx.services.pop(WORKER)
    if worker is not None and worker.transport is not None:
        await worker.transport.aclose()


PLUGIN = Plugin(name="reporting", startup=[start], shutdown=[stop], workers=[Worker("reporting", run)])
