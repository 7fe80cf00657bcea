"""The dispatcher's safety nets, each batched (nothing fleet-sized in one transaction or in memory):

- recovery (at start and periodically): a device with queued commands and a valid token but no
  owed wake-up gets one, so that a crash between an enqueue's commit and its wake-up loses
  nothing;
- the sweep (``push.sweep_interval_seconds``, daily by default): devices silent for longer than
  ``push.silent_after_hours`` with a valid token get a wake-up.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from mdm.push import store
from mdm.push.dispatcher import CHUNK, PushDispatcher

log = logging.getLogger("mdm.push")


async def recover(dispatcher: PushDispatcher) -> int:
    """Owed rows for devices with queued commands and none owed; how many were added. Pages of
    ``batch_size`` candidates by device id, each read outside any write transaction and owed in
    a short one (at 10^6 devices the walk takes seconds: SQLite's writer is not held meanwhile)."""
    if not dispatcher.transports:
        return 0
    total, after_id = 0, 0
    limit = dispatcher.config.batch_size
    while True:
        async with dispatcher.db.session() as session:
            rows = await store.recovery_candidates(session, dispatcher.clock(), dispatcher.protocols,
                                                   after_id, limit)
        if rows:
            async with dispatcher.db.transaction() as session:
                total += await store.owe_recovered(session, rows, dispatcher.clock())
            after_id = rows[-1][0]
        if len(rows) < limit:
            break
    if total:
        log.info("push: %d device(s) with queued commands were owed a wake-up (recovered)", total)
        dispatcher.nudge()
    return total


async def sweep(dispatcher: PushDispatcher) -> int:
    """Owe a wake-up to every pushable device silent for more than ``silent_after_hours``."""
    if not dispatcher.transports:
        return 0
    now = dispatcher.clock()
    silent_before = now - timedelta(hours=dispatcher.config.silent_after_hours)
    after_id, total = 0, 0
    while True:
        async with dispatcher.db.session() as session:
            ids = await store.silent_devices(session, silent_before, dispatcher.protocols, after_id, CHUNK)
        if not ids:
            break
        async with dispatcher.db.transaction() as session:
            await store.request(session, ids, now, "silent", now, dispatcher.protocols)
        total += len(ids)
        after_id = ids[-1]
        dispatcher.nudge()
    if total:
        log.info("push: %d silent device(s) owed a wake-up by the sweep", total)
    return total


async def run_recovery(dispatcher: PushDispatcher) -> None:
    """Recovery at start, then every ``retry_seconds``."""
    while True:
        try:
            await recover(dispatcher)
        except Exception as exc:
            log.warning("push recovery pass failed, will retry: %s", exc)
        await asyncio.sleep(dispatcher.config.retry_seconds)


async def run_sweep(dispatcher: PushDispatcher) -> None:
    """The sweep at start, then every ``sweep_interval_seconds``."""
    while True:
        try:
            await sweep(dispatcher)
        except Exception as exc:
            log.warning("push sweep failed, will retry at the next interval: %s", exc)
        await asyncio.sleep(dispatcher.config.sweep_interval_seconds)
