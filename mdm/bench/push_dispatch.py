"""The push dispatcher's CPU per wake-up for a bulk-sized wake, in-process, against the APNs fake.

``python -m mdm.bench.push_dispatch --devices 100000 [--commands] [--database-url URL]``, or
``mdm bench push-dispatch`` with the same options.

Prepares N iOS devices with push tokens straight into the tables (and, with ``--commands``, one
queued command each, so that every sent push stays owed as a re-push), then measures this
process's CPU (its threads included: aiosqlite's) in two phases:

- *request*: ``PushDispatcher.wake_many`` in chunks of ``--chunk`` ids (the bulk worker's batches);
- *drain*: the dispatcher's worker until every wake-up was accepted by the APNs contract fake (a
  subprocess over HTTP/2 with mutual TLS, as in ``mdm bench push``; its CPU is reported apart).

On PostgreSQL the CPU of the database backends serving this process is reported too (from
``/proc``, when PostgreSQL runs on this machine). ``--profile FILE`` writes a cProfile of the drain
phase (the event loop's thread only). ``--breakdown`` drains one batch at a time instead
(``dispatch_once``: nothing overlaps) and charges the process's CPU to each statement function of
``mdm.push.store``, to the sends and to the rest. Phases are separate so that the request rows (written in
the server by the bulk worker's batches) and the dispatcher's own work can be told apart.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mdm.bench import apns_fake_process, collector
from mdm.bench import store_push_dispatch as bench_store
from mdm.bench.push import BenchError
from mdm.bench.stats import cpu_seconds
from mdm.db.engine import Database
from mdm.db.migrate import upgrade
from mdm.db.models import Protocol
from mdm.devfakes.certs import identity_from_files
from mdm.push import store
from mdm.push.apns import ApnsClient
from mdm.push.config import ApnsConfig, PushConfig
from mdm.push.dispatcher import PushDispatcher


@dataclass
class DispatchReport:
    engine: str
    devices: int
    commands: bool
    batch_size: int
    request_seconds: float
    request_cpu_us: float  # per wake-up
    drain_seconds: float
    drain_cpu_us: float  # per wake-up
    woken: int
    owed_after: int
    database_cpu_us: dict[str, float] = field(default_factory=dict)  # PostgreSQL backends, per phase
    breakdown_us: dict[str, float] = field(default_factory=dict)  # drain CPU per wake-up, by part
    fake_cpu_us: float = 0.0
    load_average: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class CountingReceipts:
    """The ``PushReceipts`` of the bench: counts the accepted pushes (the bulk service's own adds
    one UPDATE per batch and operation)."""

    def __init__(self) -> None:
        self.accepted_total = 0
        self.changed = asyncio.Event()

    async def accepted(self, by_reason: Mapping[str, int]) -> None:
        self.accepted_total += sum(by_reason.values())
        self.changed.set()


class Breakdown:
    """Process CPU charged to named parts (outermost wins: a part inside another is charged to
    the inner one and taken off the outer)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._stack: list[list[float]] = []

    def wrap(self, name: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [_process_cpu(), 0.0]  # start, charged to inner parts
            self._stack.append(frame)
            try:
                return await function(*args, **kwargs)
            finally:
                self._stack.pop()
                used = _process_cpu() - frame[0]
                self.spent[name] = self.spent.get(name, 0.0) + used - frame[1]
                if self._stack:
                    self._stack[-1][1] += used
        return timed

    def instrument(self, dispatcher: PushDispatcher) -> None:
        for name in dir(store):
            function = getattr(store, name)
            if inspect.iscoroutinefunction(function) and function.__module__ == store.__name__:
                setattr(store, name, self.wrap(f"store.{name}", function))
        for name in ("_take", "_deliver", "_apply", "_receipts"):
            setattr(dispatcher, name, self.wrap(name, getattr(dispatcher, name)))


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pids_cpu(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) or 0.0 for pid in pids}


def backends_used(before: dict[int, float], after: dict[int, float]) -> float:
    """The CPU the backends used between two readings (pid -> CPU seconds): what each one that
    is still there used since, and the whole CPU of those opened since (the pool grows while the
    worker pipelines its batches). A backend that ended meanwhile (its connection closed; its
    /proc entry gone) adds nothing: its CPU since the first reading is not known, so the figure
    is then a lower bound, never a negative one (sums over the two readings went below zero)."""
    used = 0.0
    for pid, cpu in after.items():
        if pid not in before:
            used += cpu
        elif cpu >= before[pid]:  # (below: the pid was reused by a newer backend)
            used += cpu - before[pid]
    return used


@asynccontextmanager
async def backend_cpu(db: Database, every: float = 0.25) -> AsyncIterator[Callable[[], float]]:
    """The CPU the database's backends use inside the block (PostgreSQL; 0 on SQLite): their CPU
    read at the start, then every ``every`` seconds and at the end, so that a backend whose
    connection closes during the block counts up to its last reading. Yields a function that
    returns the figure once the block has ended."""
    before = _pids_cpu(await bench_store.backend_pids(db))
    latest: dict[int, float] = dict(before)
    used: list[float] = []

    async def read() -> None:
        for pid, cpu in _pids_cpu(await bench_store.backend_pids(db)).items():
            if cpu > 0:
                latest[pid] = cpu

    async def sample() -> None:
        while True:
            await asyncio.sleep(every)
            await read()

    sampler = None if db.is_sqlite else asyncio.create_task(sample())
    try:
        yield lambda: used[0]
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await read()
        used.append(backends_used(before, latest))


@asynccontextmanager
async def apns_fake(say: Any) -> AsyncIterator[tuple[dict[str, str], int]]:
    """The APNs contract fake in a subprocess: (its connection details, its pid)."""
    with tempfile.TemporaryDirectory(prefix="mdm-bench-pushd-") as directory:
        try:
            async with apns_fake_process.started(directory) as fake:
                say(f"APNs fake (pid {fake.process.pid}) on {fake.info['url']}")
                yield fake.info, fake.process.pid
        except apns_fake_process.FakeApnsError as exc:
            raise BenchError(str(exc)) from None


async def run(url: str, devices: int, commands: bool, batch_size: int, chunk: int,
              profile: str | None, say: Any, breakdown: bool = False) -> DispatchReport:
    db = Database(url)
    try:
        await upgrade(db)
        await bench_store.prepare(db, devices, commands, say)
        ids = await bench_store.device_ids(db)
        async with apns_fake(say) as (info, fake_pid):
            config = ApnsConfig.model_validate({"base_url": info["url"], "ca_file": info["ca_file"]})
            ident = await asyncio.to_thread(identity_from_files, Path(info["client_cert"]),
                                            Path(info["client_key"]))
            client = ApnsClient(config, ident)
            receipts = CountingReceipts()
            dispatcher = PushDispatcher(db, PushConfig(batch_size=batch_size), {Protocol.IOS: client},
                                        receipts=receipts)
            try:
                parts = Breakdown() if breakdown else None
                return await _measure(db, dispatcher, receipts, ids, commands, chunk, profile, fake_pid,
                                      say, parts)
            finally:
                await dispatcher.close()
    finally:
        await db.close()


async def _measure(db: Database, dispatcher: PushDispatcher, receipts: CountingReceipts, ids: list[int],
                   commands: bool, chunk: int, profile: str | None, fake_pid: int,
                   say: Any, parts: Breakdown | None) -> DispatchReport:
    n = len(ids)
    load = os.getloadavg()
    say(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; request: wake_many of {n} devices "
        f"in chunks of {chunk}")
    async with backend_cpu(db) as request_backends:
        cpu, began = _process_cpu(), time.perf_counter()
        for start in range(0, n, chunk):
            await dispatcher.wake_many(ids[start:start + chunk], "bulk:1")
        request_wall, request_cpu = time.perf_counter() - began, _process_cpu() - cpu
    request = (request_wall, request_cpu, request_backends())
    say(f"request: {request[0]:.2f} s; drain: the worker until {n} pushes are accepted")
    profiler = cProfile.Profile() if profile else None
    fake_cpu = cpu_seconds(fake_pid) or 0.0
    # The collector as the push worker process settles it before its loop: with the defaults the
    # drain's CPU per wake-up was ~28 % above the worker's, the collector's work (scanning what the
    # bench's start-up made), not the dispatcher's. (Its full collection before the CPU is read.)
    with collector.settled():
        async with backend_cpu(db) as drain_backends:
            cpu, began = _process_cpu(), time.perf_counter()
            if parts is not None:
                parts.instrument(dispatcher)
            if profiler is not None:
                profiler.enable()
            await _drain(dispatcher, receipts, n, serial=parts is not None)
            drain_wall, drain_cpu = time.perf_counter() - began, _process_cpu() - cpu
        drain = (drain_wall, drain_cpu, drain_backends())
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    fake_used = (cpu_seconds(fake_pid) or 0.0) - fake_cpu
    owed = await bench_store.owed_count(db)
    database = {} if db.is_sqlite else {
        "request": round(request[2] / n * 1e6, 1), "drain": round(drain[2] / n * 1e6, 1)}
    shares = {} if parts is None else {
        name: round(used / n * 1e6, 1) for name, used in sorted(parts.spent.items(), key=lambda kv: -kv[1])}
    if parts is not None:
        shares["other"] = round((drain[1] - sum(parts.spent.values())) / n * 1e6, 1)
    return DispatchReport(
        engine="sqlite" if db.is_sqlite else "postgresql", devices=n, commands=commands,
        batch_size=dispatcher.config.batch_size,
        request_seconds=round(request[0], 2), request_cpu_us=round(request[1] / n * 1e6, 1),
        drain_seconds=round(drain[0], 2), drain_cpu_us=round(drain[1] / n * 1e6, 1),
        woken=receipts.accepted_total, owed_after=owed, database_cpu_us=database, breakdown_us=shares,
        fake_cpu_us=round(fake_used / n * 1e6, 1), load_average=" ".join(f"{v:.2f}" for v in load),
    )


async def _drain(dispatcher: PushDispatcher, receipts: CountingReceipts, n: int, *, serial: bool) -> None:
    """The dispatcher's worker until ``n`` pushes were accepted and none is in flight."""
    worker = asyncio.create_task(_serial(dispatcher, n) if serial else dispatcher.run())
    try:
        while receipts.accepted_total < n or dispatcher.in_flight:
            receipts.changed.clear()
            if worker.done():
                worker.result()
                raise BenchError("the dispatcher's worker stopped")
            try:
                await asyncio.wait_for(receipts.changed.wait(), 0.2)
            except TimeoutError:
                pass
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def _serial(dispatcher: PushDispatcher, n: int) -> None:
    """One batch at a time (``--breakdown``): nothing overlaps, so each part's CPU is its own."""
    while await dispatcher.dispatch_once():
        pass
    await asyncio.Event().wait()


def render(report: DispatchReport) -> str:
    total = report.request_cpu_us + report.drain_cpu_us
    lines = [
        f"{report.engine}, {report.devices} devices, commands queued: {report.commands}, "
        f"batch {report.batch_size}, load average {report.load_average}",
        f"request   {report.request_seconds:.2f} s, {report.request_cpu_us:.1f} µs CPU per wake-up",
        f"drain     {report.drain_seconds:.2f} s, {report.drain_cpu_us:.1f} µs CPU per wake-up "
        f"({report.woken} accepted, {report.owed_after} rows owed after)",
        f"total     {total:.1f} µs CPU per wake-up in this process; the fake {report.fake_cpu_us:.1f} µs",
    ]
    if report.breakdown_us:
        lines.append("breakdown µs per wake-up (_deliver: the sends): " + ", ".join(
            f"{name} {us}" for name, us in report.breakdown_us.items()))
    if report.database_cpu_us:
        lines.append(f"database  backends' CPU per wake-up: {report.database_cpu_us}")
    return "\n".join(lines)


DESCRIPTION = (
    "The push dispatcher's CPU per wake-up for a bulk-sized wake, in-process, against the APNs "
    "contract fake (its own process): N prepared iOS devices woken with wake_many (request), then "
    "the dispatcher's worker until every wake-up is accepted (drain)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options (``mdm bench push-dispatch`` declares the same: the CLI may not import the
    bench to show its help)."""
    parser.add_argument("--devices", type=int, default=100_000, help="devices to wake (default 100000)")
    parser.add_argument("--commands", action="store_true", help="one queued command per device")
    parser.add_argument("--database-url", default="", help="default: SQLite in --data-dir")
    parser.add_argument("--data-dir", default="", help="SQLite's directory (default: a temporary one)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="push.batch_size (default: the setting's default)")
    parser.add_argument("--chunk", type=int, default=2000, help="ids per wake_many (the bulk batch)")
    parser.add_argument("--profile", default="", help="write a cProfile of the drain phase here")
    parser.add_argument("--breakdown", action="store_true", help="one batch at a time, CPU by part")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def execute(args: argparse.Namespace) -> int:
    """Run with parsed options: the report on stdout, progress on stderr; 1 on a bench error."""
    if args.batch_size is None:
        args.batch_size = PushConfig().batch_size
    if args.devices < 1 or args.chunk < 1 or args.batch_size < 1:
        print("error: --devices, --chunk and --batch-size must be >= 1", file=sys.stderr)
        return 2

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mdm-bench-pushd-db-") as scratch:
        directory = args.data_dir or scratch
        os.makedirs(directory, exist_ok=True)
        url = args.database_url or f"sqlite+aiosqlite:///{directory}/bench.db"
        _uvloop()
        try:
            report = asyncio.run(run(url, args.devices, args.commands, args.batch_size, args.chunk,
                                     args.profile or None, say, args.breakdown))
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0


def _uvloop() -> None:
    """The worker process's event loop (``mdm serve --push-worker`` runs on uvloop when installed):
    on asyncio's own loop the TLS and the sockets are Python code and the sends cost more."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdm.bench.push_dispatch",
                                     description=DESCRIPTION)
    add_arguments(parser)
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
