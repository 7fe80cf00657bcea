"""A real ``mdm serve`` delivering its outbox to the generic endpoint's contract fake (a process of
its own: mutual TLS, HMAC, de-duplication by uuid, a JSON-lines record of first receipts), killed
with SIGKILL at random points again and again, while new events keep arriving; then left to drain.

On the receiving side: every event of the outbox exactly once after de-duplication (duplicates,
from kills between a send and its mark, are counted and shown), none missing, none unknown, and
per device the first receipts in event-id order. 50 trials on SQLite, 10 on PostgreSQL.

Kill points: some trials die during start-up (before any send); the others a random 0-0.8 s after
their first new event reached the receiver, which delays every answer a little so that kills land
before a send, while a batch is in flight, and between the answer and the mark.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from ports import free_ports
from sqlalchemy import select

from mdm.bench import outbox_prepare, outbox_receiver
from mdm.bench.outbox_receiver import ReceiverFiles
from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.devfakes.core_receiver import read_record

# ~2.5 s of start-up per trial on a quiet machine (~150 s for 50); far more when the cores are shared.
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(900)]

PG = bool(os.environ.get("MDM_TEST_DATABASE_URL"))
TRIALS = int(os.environ.get("KILL_TRIALS", 0)) or (10 if PG else 50)  # KILL_TRIALS=n: a quick look
BACKLOG = 3000
DEVICES = 50
BATCH = 20
NEW_PER_TRIAL = 40  # events written while each trial's server runs
ANSWER_DELAY = 0.03  # the receiver's pause before each answer
STARTUP_KILLS = 0.15  # share of trials killed during start-up


@pytest.fixture
def receiver_files(tmp_path: Path) -> ReceiverFiles:
    return outbox_receiver.write_files(tmp_path / "receiver")


@pytest.fixture
def receiver_ports() -> tuple[int, int]:
    port, control = free_ports(2)
    return port, control


@pytest.fixture
def extra_config(receiver_files: ReceiverFiles, receiver_ports: tuple[int, int]) -> str:
    return outbox_receiver.reporting_toml(
        receiver_files, receiver_ports[0], BATCH, backoff_initial_seconds=0.05, backoff_max_seconds=0.5,
        poll_seconds=0.1)


async def _serve(config: Config) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    log = os.open(config.data_path / "serve.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mdm", "serve", "--data-dir", str(config.data_path),
            stdout=log, stderr=log, env=env)
    finally:
        os.close(log)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def _writer(db: Database, devices: list[int], seed: int, stop: asyncio.Event) -> None:
    """New events while the server runs: small transactions, as request handlers commit them."""
    written = 0
    while written < NEW_PER_TRIAL and not stop.is_set():
        await outbox_prepare.write_events(db, devices, 5, seed=seed * 1000 + written)
        written += 5
        await asyncio.sleep(0.05)


async def _wait_growth(tail: outbox_receiver.RecordTail, since: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tail.poll() > since:
            return True
        await asyncio.sleep(0.01)
    return False


async def _undelivered(db: Database) -> int:
    async with db.session() as session:
        rows = await session.execute(select(Event.id).where(Event.delivered_at.is_(None)).limit(1))
        return len(rows.all())


async def _events(db: Database) -> dict[str, tuple[int, int | None, bool]]:
    """uuid -> (id, device id, delivered) of every outbox row."""
    async with db.session() as session:
        rows = await session.execute(select(Event.uuid, Event.id, Event.device_id, Event.delivered_at))
        return {r.uuid: (r.id, r.device_id, r.delivered_at is not None) for r in rows}


async def test_sigkill_during_delivery_loses_nothing_and_keeps_order(
    config: Config, db: Database, receiver_files: ReceiverFiles, receiver_ports: tuple[int, int]
) -> None:
    started = time.monotonic()
    await outbox_prepare.prepare(config, BACKLOG, DEVICES)
    async with db.session() as session:
        devices = sorted({d for (d,) in await session.execute(select(Event.device_id).distinct()) if d})
    client_ca = config.ca_dir / "root.pem"  # the core link's identity: from the internal CA
    port, control = receiver_ports
    receiver = await outbox_receiver.start(receiver_files, port, client_ca, control,
                                           log=config.data_path / "receiver.log")
    rng = random.Random(14)
    kinds: dict[str, int] = defaultdict(int)
    try:
        await outbox_receiver.control(control, action="delay", seconds=ANSWER_DELAY)
        tail = outbox_receiver.RecordTail(receiver_files.record)
        for trial in range(TRIALS):
            before = tail.poll()
            proc = await _serve(config)
            stop = asyncio.Event()
            writer = asyncio.ensure_future(_writer(db, devices, trial, stop))
            try:
                if rng.random() < STARTUP_KILLS:
                    await asyncio.sleep(rng.uniform(0.05, 2.0))
                    kinds["start-up"] += 1
                elif await _wait_growth(tail, before, 20.0):
                    await asyncio.sleep(rng.uniform(0.0, 0.8))
                    kinds["delivering"] += 1
                else:
                    kinds["nothing received in 20 s"] += 1
            finally:
                await _kill(proc)
                stop.set()
                await writer
            kinds["trials delivering something"] += tail.poll() > before
            print(f"trial {trial}: {time.monotonic() - started:.1f}s, {tail.poll()} received", flush=True)
        # The last run: to an empty outbox (nothing is written any more).
        await outbox_receiver.control(control, action="clear")
        last = await _serve(config)
        try:
            async with asyncio.timeout(120):
                while await _undelivered(db):
                    assert last.returncode is None, (config.data_path / "serve.log").read_text()[-3000:]
                    await asyncio.sleep(0.2)
            drained = await _events(db)
        finally:
            if last.returncode is None:
                last.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(last.wait(), 30)
            except TimeoutError:
                await _kill(last)
        counters = await outbox_receiver.stats(control)
    finally:
        await outbox_receiver.stop(receiver)
    after = await _events(db)
    received = read_record(receiver_files.record)
    uuids = [e["uuid"] for e in received]
    print(f"\n{TRIALS} trials {dict(kinds)}; {len(after)} events, {len(set(uuids))} received, "
          f"{counters['duplicates']} duplicates dropped by the receiver, {counters['requests']} requests, "
          f"answers {counters['answers']}; {time.monotonic() - started:.0f}s")
    # Exactly once after de-duplication: the record holds first receipts only.
    assert len(uuids) == len(set(uuids))
    # None missing: every event in the outbox when it was empty, and every one delivered since.
    missing = set(drained) - set(uuids)
    assert not missing, f"{len(missing)} events never reached the receiver"
    assert {u for u, (_, _, delivered) in after.items() if delivered} <= set(uuids)
    # None unknown: nothing arrives that the outbox does not hold.
    assert set(uuids) <= set(after)
    # Per device, first receipts in event-id order.
    last_id: dict[int | None, int] = {}
    for uuid in uuids:
        event_id, device, _ = after[uuid]
        assert event_id > last_id.get(device, 0), f"device {device}: event {event_id} after {last_id[device]}"
        last_id[device] = event_id
    # The trials did what they are for: kills during start-up and during delivery, and more
    # events than the backlog arrived (new ones, written while servers ran, included).
    assert kinds["start-up"] > 0 and kinds["delivering"] > TRIALS // 2, kinds
    assert len(after) >= BACKLOG + TRIALS * 5
