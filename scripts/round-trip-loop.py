#!/usr/bin/env python3
"""The three transactions of a command round trip, in a loop, without HTTP: CPU per round trip.

Developer tool behind the service-layer figures in docs/PERFORMANCE.md ("Where the time goes").
It works on a copy of the SQLite database of a prepared bench data directory (the original is not
touched), enqueues `Block` for the first N devices, lets the channel deliver it as an Idle poll
would, and records `Acknowledged`:

    python scripts/round-trip-loop.py --data-dir /tmp/b10k-sqlite --count 300 [--echo]
"""

from __future__ import annotations

import argparse
import asyncio
import plistlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select

from mdm.core import commands, devices
from mdm.core.identity import Binding
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.ios import channel
from mdm.ios.commands import IosCommandTranslator
from mdm.ios.messages import CommandReport
from mdm.ios.state import QueueHint


async def run(database: Path, count: int, echo: bool) -> None:
    db = Database(f"sqlite+aiosqlite:///{database}", echo=echo)
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
    async with db.session() as session:
        fleet = list((await session.scalars(select(Device).order_by(Device.id).limit(count))).all())
    phases: dict[str, list[float]] = {"enqueue": [], "deliver": [], "answer": []}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for device in fleet:
        t0 = time.perf_counter()
        async with db.transaction() as session:
            await commands.enqueue_logged(
                session, await devices.get(session, device.id), "Block", {}, translators=translators
            )
        t1 = time.perf_counter()
        offered = plistlib.loads((await channel._idle(svc, device.id)).body)  # type: ignore[arg-type]
        t2 = time.perf_counter()
        report = CommandReport(
            identifier=device.identifier,
            status="Acknowledged",
            command_uuid=offered["CommandUUID"],
            request_type=None,
            user_id=None,
            result={},
        )
        await channel.handle(svc, Binding(device.id, device.identifier, "active", 0), report)  # type: ignore[arg-type]
        t3 = time.perf_counter()
        for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            phases[name].append(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await db.close()
    n = max(1, len(fleet))
    print(f"{len(fleet)} round trips: wall {1000 * wall / n:.2f} ms, cpu {1000 * cpu / n:.2f} ms each")
    for name, values in phases.items():
        print(f"  {name}: median {1000 * statistics.median(values):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="a data directory prepared by mdm bench ios"
    )
    parser.add_argument("--count", type=int, default=300, help="round trips (one per device)")
    parser.add_argument("--echo", action="store_true", help="log every SQL statement")
    args = parser.parse_args()
    source = args.data_dir / "mdm.sqlite3"
    if not source.exists():
        parser.error(f"{source} does not exist (prepare it with mdm bench ios --data-dir {args.data_dir})")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "mdm.sqlite3"
        shutil.copyfile(source, copy)  # the server must not be running: its WAL is not copied
        asyncio.run(run(copy, args.count, args.echo))


if __name__ == "__main__":
    main()
