#!/usr/bin/env python3
"""The three transactions of a command round trip, in a loop, without HTTP: CPU per round trip.

Developer tool behind the service-layer figures in docs/PERFORMANCE.md ("Where the time goes").
It enqueues a command for the first N devices of a prepared bench fleet, lets the channel deliver
it as an Idle poll would, and records the device's answer. On SQLite it works on a copy of the
database of a prepared bench data directory (the original is not touched); on PostgreSQL
(``--database-url``) on the bench's database itself (it only adds commands, which it completes).

``--command Block`` answers ``Acknowledged`` to the DeviceLock; ``--command DeviceInformation``
queues ``RefreshDeviceInfo`` for the device_info part (one DeviceInformation step with the default
queries) and answers it with the simulator's full answer (``mdm.sim.behaviour``), serialised to an
XML plist and parsed again as the iOS handler does. The CPU of each phase is the server's only
(the simulated device's work is outside the measured spans); the split is printed per phase:

    python scripts/round-trip-loop.py --data-dir /tmp/b10k-sqlite --count 300 [--command DeviceInformation]
    python scripts/round-trip-loop.py --database-url postgresql+asyncpg://postgres@127.0.0.1/delivery_bench
    ... [--statements] [--profile out.prof] [--echo]

``--statements`` counts the SQL statements (and transactions) per phase; ``--profile`` writes a
cProfile of the deliver and answer phases (not the enqueue) and prints its top entries.
``--backend-cpu`` (PostgreSQL on this machine) adds the CPU of the database's backend processes
per phase (``/proc/<pid>/schedstat``, read between the phases: nothing else may use the
database meanwhile), so that work moved into a statement is not counted as saved. On
PostgreSQL a Block's deliver and answer show 0 commits: each runs as autocommit statements
(``mdm.ios.channel_direct``), not in a transaction block.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import plistlib
import pstats
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event, select

from mdm.core import command_enqueue, commands, devices
from mdm.core.identity import Binding
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db import migrate
from mdm.db.engine import Database
from mdm.db.models import Command, Device, Protocol
from mdm.ios import channel
from mdm.ios.commands import IosCommandTranslator
from mdm.ios.messages import load_plist, parse_report
from mdm.ios.state import QueueHint
from mdm.sim.behaviour import DeviceState, answer
from mdm.sim.facts import HardwareFacts

PHASES = ("enqueue", "deliver", "answer")
# What each --command queues: (library type, arguments).
QUEUED: dict[str, tuple[str, dict[str, Any]]] = {
    "Block": ("Block", {}),
    "DeviceInformation": ("RefreshDeviceInfo", {"parts": ["device_info"]}),
}


class Counter:
    """SQL statements per phase (``--statements``)."""

    def __init__(self) -> None:
        self.phase = "enqueue"
        self.statements: dict[str, int] = dict.fromkeys(PHASES, 0)
        self.commits: dict[str, int] = dict.fromkeys(PHASES, 0)

    def install(self, db: Database) -> None:
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._statement)
        event.listen(db.engine.sync_engine, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements[self.phase] += 1

    def _commit(self, *_: Any) -> None:
        self.commits[self.phase] += 1


class Backends:
    """CPU time of the PostgreSQL backends serving one database (``--backend-cpu``): their
    process titles name it; the set is looked up again every ``REFRESH`` round trips (the pool
    and the kept connections open during the first ones)."""

    REFRESH = 20

    def __init__(self, database: str) -> None:
        self.title = f" {database} ".encode()
        self.pids: list[str] = []

    def refresh(self) -> None:
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                continue
            if title.startswith(b"postgres: ") and self.title in title:
                found.append(pid)
        self.pids = found

    def seconds(self) -> dict[str, float]:
        """CPU seconds so far, per backend."""
        out = {}
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/schedstat") as f:
                    out[pid] = int(f.read().split()[0]) / 1e9
            except OSError:
                continue  # gone
        return out

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> float:
        return sum(after[pid] - before.get(pid, after[pid]) for pid in after)


async def run(
    url: str, count: int, command: str, echo: bool, statements: bool, profile: Path | None, backend_cpu: bool
) -> None:
    db = Database(url, echo=echo)
    await migrate.upgrade(db)  # the schema of this tree (a prepared database may be older)
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    svc = SimpleNamespace(
        db=db,
        engine=db.engine,
        hint=QueueHint(60, 1000),
        config=SimpleNamespace(notnow_backoff_seconds=60, notnow_backoff_max_seconds=3600),
        translators=translators,
        pushers=Pushers(),
    )
    counter = Counter()
    if statements:
        counter.install(db)
    type_name, args = QUEUED[command]
    async with db.session() as session:
        fleet = list((await session.scalars(select(Device).order_by(Device.id).limit(count))).all())
    cpu: dict[str, list[float]] = {name: [] for name in PHASES}
    backend: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    postgres = db.engine.dialect.name == "postgresql"
    backends = Backends(str(db.engine.url.database)) if backend_cpu and postgres else None
    wall: dict[str, list[float]] = {name: [] for name in PHASES}
    profiler = cProfile.Profile(time.thread_time) if profile else None
    answered = 0
    async with db.transaction() as session:  # left over by an interrupted run
        for device in fleet:
            for guid in await session.scalars(
                select(Command.guid).where(Command.device_id == device.id, Command.active.is_(True))
            ):
                await commands.recall(session, guid, by="round-trip-loop")
    for number, device in enumerate(fleet):
        if backends is not None and number % Backends.REFRESH == 0:
            backends.refresh()
        rng = random.Random(device.id)  # noqa: S311 - simulation data
        facts = dataclasses.replace(HardwareFacts.generate(rng), udid=device.identifier)
        state = DeviceState(facts=facts)
        counter.phase = "enqueue"
        b0 = backends.seconds() if backends else {}
        c0, w0 = time.process_time(), time.perf_counter()
        async with db.transaction() as session:
            await command_enqueue.enqueue_logged(
                session, await devices.get(session, device.id), type_name, dict(args), translators=translators
            )
        c1, w1 = time.process_time(), time.perf_counter()
        b1 = backends.seconds() if backends else {}
        counter.phase = "deliver"
        c1b, w1b = time.process_time(), time.perf_counter()  # the look at the backends not counted
        if profiler:
            profiler.enable()
        delivered = await channel._idle(svc, device.id)  # type: ignore[arg-type]
        if profiler:
            profiler.disable()
        c2, w2 = time.process_time(), time.perf_counter()
        b2 = backends.seconds() if backends else {}
        # The simulated device (not measured): read the command, build and serialise its answer.
        message = answer(state, plistlib.loads(delivered.body))
        if message["Status"] != "Acknowledged":
            raise SystemExit(f"device {device.id} answered {message['Status']}: {message}")
        body = plistlib.dumps(message, fmt=plistlib.FMT_XML)
        counter.phase = "answer"
        b2b = backends.seconds() if backends else {}
        c3, w3 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        report = parse_report(load_plist(body))  # as the iOS handler does
        await channel.handle(svc, Binding(device.id, device.identifier, "active", 0), report)  # type: ignore[arg-type]
        if profiler:
            profiler.disable()
        c4, w4 = time.process_time(), time.perf_counter()
        answered += 1
        if backends is not None:
            b3 = backends.seconds()
            for name, (before, after) in zip(PHASES, ((b0, b1), (b1, b2), (b2b, b3)), strict=True):
                backend[name] += Backends.used(before, after)
        for name, used, took in zip(
            PHASES, (c1 - c0, c2 - c1b, c4 - c3), (w1 - w0, w2 - w1b, w4 - w3), strict=True
        ):
            cpu[name].append(used)
            wall[name].append(took)
    await db.close()
    n = max(1, answered)
    total = {name: sum(v) for name, v in cpu.items()}
    print(
        f"{answered} {command} round trips ({db.engine.dialect.name}): server CPU per round trip "
        f"{1000 * sum(total.values()) / n:.2f} ms incl. enqueue, "
        f"{1000 * (total['deliver'] + total['answer']) / n:.2f} ms delivery (poll + answer)"
    )
    for name in PHASES:
        line = (
            f"  {name}: cpu {1000 * total[name] / n:.2f} ms mean, wall median "
            f"{1000 * statistics.median(wall[name] or [0]):.2f} ms"
        )
        if backends is not None:
            line += f"; backends {1000 * backend[name] / n:.2f} ms"
        if statements:
            line += (
                f"; {counter.statements[name] / n:.1f} statements,"
                f" {counter.commits[name] / n:.1f} commits per round trip"
            )
        print(line)
    if profiler and profile:
        profiler.dump_stats(profile)
        stats = pstats.Stats(str(profile))
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="a data directory prepared by mdm bench ios (SQLite)")
    parser.add_argument("--database-url", help="PostgreSQL prepared by mdm bench ios")
    parser.add_argument("--count", type=int, default=300, help="round trips (one per device)")
    parser.add_argument("--command", choices=sorted(QUEUED), default="Block")
    parser.add_argument("--echo", action="store_true", help="log every SQL statement")
    parser.add_argument("--statements", action="store_true", help="count SQL statements per phase")
    parser.add_argument("--profile", type=Path, help="write a cProfile of deliver + answer here")
    parser.add_argument(
        "--backend-cpu", action="store_true", help="PostgreSQL: also its backends' CPU per phase"
    )
    args = parser.parse_args()
    options = (args.count, args.command, args.echo, args.statements, args.profile, args.backend_cpu)
    if args.database_url:
        asyncio.run(run(args.database_url, *options))
        return
    if args.data_dir is None:
        parser.error("give --data-dir (SQLite) or --database-url (PostgreSQL)")
    source = args.data_dir / "mdm.sqlite3"
    if not source.exists():
        parser.error(f"{source} does not exist (prepare it with mdm bench ios --data-dir {args.data_dir})")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "mdm.sqlite3"
        shutil.copyfile(source, copy)  # the server must not be running: its WAL is not copied
        asyncio.run(run(f"sqlite+aiosqlite:///{copy}", *options))


if __name__ == "__main__":
    main()
