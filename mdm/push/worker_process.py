"""The push dispatcher's worker in a process of its own (``[push] worker = "process"``).

Started and supervised by the server (``mdm.push.supervisor``) as ``mdm serve --push-worker``:
it reads the server's configuration (and what the server hands over: the APNs identity it holds)
as one JSON line on stdin, builds the same transports over its own ``Database``, and runs what
the server runs inline otherwise: the dispatch, the recovery pass and the daily sweep, with the
bulk receipts. The server only writes the owed ``push_wakeups`` rows (``wake_many``).

- New rows: the worker looks for the earliest due row every ``POLL_SECONDS`` (one indexed
  statement, ``store.next_due``) and nudges its dispatcher when one is due. Chosen over a nudge
  from the server (a socket or pipe per ``wake_many``) because it needs nothing from the
  server's code path, works alike on SQLite and PostgreSQL, loses nothing when either side
  restarts (the rows are the message) and also finds the rows other replicas' servers wrote.
- Its counters and push metrics go to the server as one JSON line a second on stdout
  (``mdm.push.worker_channel``); its logs go to stderr, the server's.
- It ends on SIGTERM/SIGINT, and when stdin reaches its end (the server is gone: no orphan).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import Any

from mdm.config import Config, Sections
from mdm.core.metrics import REGISTRY
from mdm.db import sqlite_driver
from mdm.db.engine import Database
from mdm.db.writer_turns import WriterTurns
from mdm.logs import setup_logging
from mdm.push import store, sweeps
from mdm.push.assembly import WorkerSetup, build_transports
from mdm.push.config import HOT_KEYS, PushConfig, push_config
from mdm.push.dispatcher import PushDispatcher
from mdm.push.worker_channel import snapshot
from mdm.server.context import ServerContext
from mdm.server.runtime import settle_gc

log = logging.getLogger("mdm.push")

POLL_SECONDS = 0.1
REPORT_SECONDS = 1.0
LOCK_POLL_SECONDS = 0.001


def encode_start(config: Config, handoff: Mapping[str, Any]) -> bytes:
    """The first line the server writes to the worker's stdin."""
    return json.dumps({
        "config": config.model_dump(mode="json"),
        "sections": {name: section.model_dump(mode="json") for name, section in config.extensions.items()},
        "handoff": dict(handoff),
    }).encode() + b"\n"


def encode_settings(config: Config) -> bytes:
    """A later line: the ``[push]`` section after ``mdm reload`` changed only its hot keys."""
    return json.dumps({"push": push_config(config).model_dump(mode="json")}).encode() + b"\n"


def start_without_hot_keys(start: bytes) -> dict[str, Any]:
    """A start line without the ``[push]`` keys a settings line can change: equal for two
    configurations that differ only in those."""
    data: dict[str, Any] = json.loads(start)
    push = data["sections"].get(PushConfig.name, {})
    data["sections"][PushConfig.name] = {k: v for k, v in push.items() if k not in HOT_KEYS}
    return data


def decode_start(line: bytes, sections: Sections) -> tuple[Config, dict[str, Any]]:
    data = json.loads(line)
    config = Config.model_validate(data["config"])
    for name, model in sections:
        config.extensions[name] = model.model_validate(data["sections"].get(name, {}))
    return config, dict(data.get("handoff") or {})


async def poll_due(dispatcher: PushDispatcher, interval: float = POLL_SECONDS) -> None:
    """Nudge the dispatcher when a row is due (the server wrote it, or a retry came due)."""
    ahead = timedelta(seconds=interval)
    while True:
        await asyncio.sleep(interval)
        if not dispatcher.transports:
            continue
        try:
            async with dispatcher.db.session() as session:
                due = await store.next_due(session, dispatcher.protocols)
        except Exception as exc:  # the database is away: the dispatcher reports it too
            log.debug("push worker: next due time unknown: %s", exc)
            continue
        if due is not None and due <= dispatcher.clock() + ahead:
            dispatcher.nudge()


async def report(dispatcher: PushDispatcher, out: asyncio.WriteTransport,
                 interval: float = REPORT_SECONDS) -> None:
    while True:
        out.write(snapshot(dispatcher.stats, REGISTRY, dispatcher.config.model_dump(include=set(HOT_KEYS))))
        await asyncio.sleep(interval)


async def run(setup: WorkerSetup, sections: Sections) -> int:
    """The worker process's life; its exit status."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    if not line:
        print("push worker: no configuration on stdin", file=sys.stderr)
        return 2
    config, handoff = decode_start(line, sections)
    setup_logging(config.logging.json_lines, config.logging.level)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # SQLite: the take's claim and the apply, inline, look for the server's write lock every
    # millisecond while they hold their turn (``mdm.db.writer_turns``: the server's bulk batches
    # wait for them meanwhile), not in SQLite's busy handler (sleeps growing to 100 ms).
    sqlite_driver.LOCK_POLL.set(LOCK_POLL_SECONDS)
    # immediate: on SQLite the server is another writer, and the take's read and its writes must
    # be one transaction against it (tests/test_push_take_atomic.py).
    db = Database(config.database_url, config.database.pool_size, config.database.echo, immediate=True)
    ctx = ServerContext(config=config, db=db)
    if setup.receive is not None:
        setup.receive(ctx, handoff)
    transports = await build_transports(ctx, setup.factories)
    settings = push_config(config)
    dispatcher = PushDispatcher(db, settings.worker_share(), transports, lease_seconds=settings.lease_seconds,
                                receipts=setup.receipts(ctx) if setup.receipts is not None else None,
                                inline_writes=True, turns=WriterTurns.for_url(config.database_url))
    settle_gc()
    nice = settings.nice(config.database_url)
    if nice:
        os.nice(nice)  # (PushConfig.worker_nice: the server's work first)
    jobs: list[Coroutine[Any, Any, None]] = [
        dispatcher.run(), sweeps.run_recovery(dispatcher), sweeps.run_sweep(dispatcher),
        poll_due(dispatcher), report(dispatcher, out), _settings(reader, dispatcher), _until_set(stop),
    ]
    tasks = [asyncio.create_task(job) for job in jobs]
    log.info("push worker: started (pid %d) with %s", os.getpid(), ", ".join(sorted(
        p.name.lower() for p in transports)) or "no transport")
    status = 0
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("push worker: a task failed: %r", task.exception())
                status = 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            out.write(snapshot(dispatcher.stats, REGISTRY))  # the last counts, for the server's totals
        await dispatcher.close()
        if dispatcher.turns is not None:
            dispatcher.turns.close()
        await db.close()
        log.info("push worker: stopped")
    return status


async def _settings(reader: asyncio.StreamReader, dispatcher: PushDispatcher) -> None:
    """Settings lines from the server (``mdm reload``), until it closes the pipe."""
    while line := await reader.readline():
        try:
            settings = PushConfig.model_validate(json.loads(line)["push"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("push worker: a settings line from the server is not valid: %s", exc)
            continue
        dispatcher.config = settings.worker_share()
        log.info("push worker: settings applied (repush_per_second %s of %s)",
                 dispatcher.config.repush_per_second, settings.repush_per_second)
        dispatcher.nudge()
    log.info("push worker: the server closed the pipe; stopping")


async def _until_set(event: asyncio.Event) -> None:
    await event.wait()
