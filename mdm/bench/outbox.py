"""``mdm bench outbox``: catch-up of an outbox backlog to the generic endpoint's local receiver.

Phases:
  (a) prepare   N undelivered events about D devices written straight to the tables
                (``outbox_prepare``; a data directory holding N events is re-queued instead);
  (b) catch-up  the contract fake ``mdm.devfakes.core_receiver`` in a process of its own (mutual
                TLS, HMAC verified, de-duplication by uuid, a JSON-lines record), and ``mdm serve``
                with ``[reporting] transport = "generic"``, started with the backlog in place;
                measured until the outbox is empty.
Reported: events/s overall (server start to drained) and steady (10 % to 90 % of the events
received), time to drain, batch round trips (p50/p99/max, the receiver's per-request record),
the server's CPU per event (/proc of the server process) and its RSS at start, peak and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdm.bench import local, outbox_prepare, outbox_receiver, ports, profile
from mdm.bench.outbox_measure import Sample, Sampler, round_trips, steady, verify
from mdm.bench.progress import Progress
from mdm.bench.stats import MEMORY_KEYS, load_average, rss_mib

Say = Callable[[str], None]
PROFILE_SECONDS = 30  # --py-spy: the first seconds of the catch-up after the server answers


class BenchError(Exception):
    pass


@dataclass
class Options:
    events: int = 1_000_000
    batch_size: int = 1000
    devices: int = 1000
    data_dir: Path | None = None
    keep_data: bool = False
    database_url: str = ""
    timeout: float = 1800.0  # seconds allowed for the catch-up
    py_spy: Path | None = None  # record the server with py-spy during the catch-up (raw format)


@dataclass
class Report:
    setup: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    catchup: dict[str, Any] = field(default_factory=dict)
    round_trip: dict[str, Any] = field(default_factory=dict)
    received: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


async def run(options: Options, say: Say) -> Report:
    if options.events < 1 or options.devices < 1 or not 1 <= options.batch_size <= 10_000:
        raise BenchError("--events and --devices must be >= 1, --batch-size 1..10000")
    async with _data_dir(options, say) as data_dir:
        return await _run(options, data_dir, say)


@contextlib.asynccontextmanager
async def _data_dir(options: Options, say: Say) -> AsyncIterator[Path]:
    if options.data_dir is not None:
        yield options.data_dir
        return
    tmp = Path(tempfile.mkdtemp(prefix="mdm-bench-outbox-"))
    try:
        yield tmp
    finally:
        if options.keep_data:
            say(f"data kept in {tmp}")
        else:
            await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _run(options: Options, data_dir: Path, say: Say) -> Report:
    report = Report()
    say(f"preparing {data_dir}...")
    config = await asyncio.to_thread(local.prepare, data_dir, database_url=options.database_url)
    files = outbox_receiver.write_files(data_dir / "bench" / "receiver")
    port, control_port = ports.free_ports(2, avoid=local.listener_ports(config))
    outbox_receiver.configure(data_dir, files, port, options.batch_size)
    config = await asyncio.to_thread(local.prepare, data_dir, database_url=options.database_url)
    progress = Progress(say, "(a) prepare events", options.events, interval=5.0)
    prepared = await outbox_prepare.prepare(config, options.events, options.devices, progress=progress.update)
    progress.finish()
    report.prepare = {"events": prepared.events, "devices": prepared.devices, "written": prepared.written,
                      "seconds": prepared.seconds}
    receiver = await outbox_receiver.start(files, port, config.ca_dir / "root.pem", control_port,
                                           log=data_dir / "bench" / "receiver.log")
    server = local.LocalServer(config)
    try:
        say(f"(b) catch-up: mdm serve with {options.events:,} events waiting, "
            f"batch size {options.batch_size}...")
        t0 = time.monotonic()
        sampler = Sampler(files.record, receiver.pid)
        start = asyncio.ensure_future(server.start(wait_s=300))
        while not start.done():
            sampler.sample(t0, server.process.pid if server.process else None)
            await asyncio.sleep(0.1)
        await start
        report.rss_mib["start"] = rss_mib(server.pid, MEMORY_KEYS)
        report.setup = {
            "events": options.events, "devices": options.devices, "batch_size": options.batch_size,
            "database": "PostgreSQL" if options.database_url else "SQLite (embedded)",
            "transport": "generic (HTTPS, mutual TLS, HMAC-SHA256)", "server_pid": server.pid,
            "receiver_pid": receiver.pid, "cpus": os.cpu_count(), "load_before": load_average(),
        }
        spy = await profile.record(server.pid, PROFILE_SECONDS, options.py_spy) if options.py_spy else None
        last = await _until_drained(options, config.database_url, sampler, server.pid, t0, say)
        report.rss_mib["end"] = rss_mib(server.pid, MEMORY_KEYS)
        report.rss_mib["peak_sampled"] = max((s.rss_kib for s in sampler.samples), default=0) // 1024
        report.rss_mib["peak_anon_sampled"] = max((s.anon_kib for s in sampler.samples), default=0) // 1024
        if spy is not None:
            await spy.communicate()
            report.profile = {"file": str(options.py_spy), **profile.summarise(options.py_spy)}  # type: ignore[arg-type]
        counters = await outbox_receiver.stats(control_port)
    finally:
        await server.stop()
        await outbox_receiver.stop(receiver)
    report.catchup = _catchup(options.events, sampler.samples, last)
    checked = await asyncio.to_thread(verify, files.record)
    report.received = {**checked.summary(), "duplicates": int(counters.get("duplicates", 0)),
                       "requests": counters.get("requests"), "answers": counters.get("answers")}
    report.round_trip = round_trips(await asyncio.to_thread(outbox_receiver.timings, files.timings))
    return report


async def _until_drained(options: Options, database_url: str, sampler: Sampler, pid: int, t0: float,
                         say: Say) -> Sample:
    from mdm.bench.outbox_measure import undelivered

    progress = Progress(say, "(b) received", options.events, interval=5.0)
    deadline = t0 + options.timeout
    while True:
        sample = sampler.sample(t0, pid)
        progress.update(min(sample.received, options.events))
        if sample.received >= options.events and await undelivered(database_url) == 0:
            progress.finish()
            return sampler.sample(t0, pid)
        if time.monotonic() > deadline:
            raise BenchError(f"the backlog was not drained within {options.timeout:.0f}s "
                             f"({sample.received:,} of {options.events:,} received)")
        await asyncio.sleep(0.25)


def _catchup(events: int, samples: list[Sample], last: Sample) -> dict[str, Any]:
    first = next((s for s in samples if s.received > 0), last)
    # CPU is counted from the last sample before the first event arrived: a small backlog is
    # delivered between two samples, where counting from ``first`` would find no CPU at all.
    before = next((s for s in reversed(samples) if s.t < first.t and s.received == 0), first)
    rate, cpu_steady = steady(samples, events)
    cpu_start = before.cpu if before.cpu is not None else math.nan
    cpu_end = last.cpu if last.cpu is not None else math.nan
    delivering = max(last.t - first.t, 1e-9)
    receiver = (last.receiver_cpu or 0.0) - (first.receiver_cpu or 0.0)
    return {
        "drained_s": round(last.t, 2),
        "first_event_s": round(first.t, 2),
        "delivering_s": round(delivering, 2),
        "events_per_s_overall": round(events / max(last.t, 1e-9), 1),
        "events_per_s_delivering": round(events / delivering, 1),
        "events_per_s_steady": round(rate, 1),
        "server_cpu_s": round(cpu_end - cpu_start, 2),
        "server_cpu_ms_per_event": round(1000 * (cpu_end - cpu_start) / events, 4),
        "server_cpu_ms_per_event_steady": round(cpu_steady * 1000, 4),
        "server_cpu_share": round((cpu_end - cpu_start) / max(last.t - before.t, 1e-9), 2),
        "receiver_cpu_ms_per_event": round(1000 * receiver / events, 4),
        "receiver_cpu_share": round(receiver / delivering, 2),
    }


def render(report: Report) -> str:
    setup, c, r, rt = report.setup, report.catchup, report.received, report.round_trip
    lines = [f"mdm bench outbox: {setup.get('events'):,} events over {setup.get('devices')} devices, "
             f"batch size {setup.get('batch_size')}, {setup.get('database')}, {setup.get('transport')}",
             f"  load before: {setup.get('load_before', '')}"]
    if report.prepare:
        p = report.prepare
        lines.append(f"  (a) prepare: {p['written']:,} written in {p['seconds']}s ({p['events']:,} waiting)")
    if c:
        lines.append(
            f"  (b) catch-up: drained in {c['drained_s']}s from server start "
            f"(first event at {c['first_event_s']}s); {c['events_per_s_overall']:,} events/s overall, "
            f"{c['events_per_s_delivering']:,}/s while delivering, "
            f"{c['events_per_s_steady']:,}/s steady (10-90 %)")
        lines.append(f"      server CPU {c['server_cpu_ms_per_event']} ms/event "
                     f"(steady {c['server_cpu_ms_per_event_steady']}), {c['server_cpu_share']} cores; "
                     f"receiver CPU {c['receiver_cpu_ms_per_event']} ms/event, "
                     f"{c['receiver_cpu_share']} cores")
    if rt:
        lines.append(f"      batch round trip: {rt.get('batches')} batches, p50 {rt.get('p50_ms')} ms, "
                     f"p99 {rt.get('p99_ms')} ms, max {rt.get('max_ms')} ms ({rt.get('source')})")
    if r:
        lines.append(f"      received: {r['unique']:,} unique, {r['duplicates']} duplicates, "
                     f"per-device order {'kept' if r['order_kept'] else 'BROKEN'}")
    lines.append(f"  server RSS (MiB): {report.rss_mib}")
    if report.profile:
        top = ", ".join(f"{name} {pct}%" for name, pct in report.profile["inclusive"][:12])
        lines.append(f"  server profile ({report.profile['samples']} samples, inclusive): {top}")
    return "\n".join(lines)
