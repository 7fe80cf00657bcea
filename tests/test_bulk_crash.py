"""A real ``mdm serve`` killed (SIGKILL) while it queues a bulk operation, then restarted: the
operation resumes from its cursor and ends with exactly one command per device, counts equal to
the rows, and never a command without its queue row and its journal row."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

import pytest
from bulk_support import add_devices, count
from sqlalchemy import func, select

from mdm.config import Config
from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import BulkOperation, Command, CommandJournalEntry, CommandQueueEntry, Event

DEVICES = 4000
BATCH = 10


@pytest.fixture
def extra_config() -> str:
    return f"[bulk]\nbatch_size = {BATCH}\nidle_seconds = 0.2\n"


async def _serve(config: Config) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", "serve", "--data-dir", str(config.data_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
    )


async def _op(db: Database, bulk_id: int) -> BulkOperation:
    async with db.session() as session:
        op = await session.get(BulkOperation, bulk_id, populate_existing=True)
        assert op is not None
        return op


async def _until(
    db: Database, bulk_id: int, done: Callable[[BulkOperation], bool], timeout: float = 120.0
) -> BulkOperation:
    async with asyncio.timeout(timeout):
        while True:
            op = await _op(db, bulk_id)
            if done(op):
                return op
            await asyncio.sleep(0.02)


async def test_killed_while_queuing_resumes_exactly(config: Config, db: Database) -> None:
    ids = await add_devices(db, DEVICES)
    # Recorded as the request would (state queuing); the server's worker picks it up at start-up.
    op = await BulkService(db, Translators(), Pushers()).create("Block", None, by="alice")
    first = await _serve(config)
    try:
        await _until(db, op.id, lambda o: o.queued >= 40 * BATCH)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    halfway = await _op(db, op.id)
    assert halfway.state == "queuing" and 0 < halfway.queued < DEVICES, (halfway.state, halfway.queued)
    # Whatever was committed is whole: its counters equal its rows.
    assert halfway.queued == await count(db, select(Command.id).where(Command.bulk_id == op.id))
    second = await _serve(config)
    try:
        done = await _until(db, op.id, lambda o: o.state != "queuing")
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(second.wait(), 30)
        except TimeoutError:
            second.kill()
            await second.wait()
    assert (done.state, done.targeted, done.queued, done.skipped) == ("queued", DEVICES, DEVICES, 0)
    mine = select(Command.id).where(Command.bulk_id == op.id)
    async with db.session() as session:
        per_device = (await session.execute(
            select(Command.device_id, func.count()).group_by(Command.device_id)
        )).all()
        batches = (await session.scalars(select(Event.body).where(Event.type == "commands_created"))).all()
    assert sorted(d for d, _ in per_device) == ids and {n for _, n in per_device} == {1}
    assert await count(db, select(CommandQueueEntry).where(CommandQueueEntry.command_id.in_(mine))) == DEVICES
    journal = select(CommandJournalEntry).where(CommandJournalEntry.command_id.in_(mine))
    assert await count(db, journal) == DEVICES
    assert sum(b["count"] for b in batches) == DEVICES and max(b["count"] for b in batches) <= BATCH
