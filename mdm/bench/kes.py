"""``mdm bench kes``: steady syncs of N enrolled KES devices over mutual TLS.

Phases, on a local ``mdm serve`` (its CPU read from /proc, its RSS sampled):
  (a) prepare    N enrolled devices written straight to the tables (``kes_prepare``; reused when
                 the data directory already holds them);
  (b) reuse      D of them (``--connections``) sync at ``--rate`` syncs/s in all, each device on
                 its own kept-alive TLS connection (as an agent between syncs);
  (c) handshake  the same, with a new connection and a full TLS handshake per sync.
The load generator is ``--workers`` processes (``kes_load``) on the same machine as the server:
what it costs is reported (its CPU per sync) because on two cores it bounds the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from mdm.bench import kes_load, kes_prepare, local, profile
from mdm.bench.progress import Progress
from mdm.bench.stats import cpu_seconds, load_average, rss_mib
from mdm.kes.config import KesConfig
from mdm.pki.slots import load_slot_certificate
from mdm.sim.identity import Identity
from mdm.sim.kes.http import spki_sha256
from mdm.sim.stats import percentile

Say = Callable[[str], None]


class BenchError(Exception):
    pass


@dataclass
class Options:
    devices: int
    connections: int | None = None  # default min(devices, 1000)
    rate: float = 1500.0  # offered syncs/s in all, phase (b)
    handshake_rate: float = 300.0  # phase (c): a full handshake each costs the server far more
    duration: float = 30.0
    workers: int = 2
    database_url: str = ""
    data_dir: Path | None = None
    keep_data: bool = False
    skip: tuple[str, ...] = ()  # "reuse", "handshake"
    min_spacing: float | None = None  # [kes] min_sync_spacing_seconds of the local server
    py_spy: Path | None = None  # record the server with py-spy during phase (b) (raw format)


@dataclass
class Report:
    setup: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    reuse: dict[str, Any] = field(default_factory=dict)
    handshake: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


async def run(options: Options, say: Say) -> Report:
    if options.devices < 1 or min(options.rate, options.handshake_rate, options.duration) <= 0 \
            or options.workers < 1:
        raise BenchError("--devices, --rate, --handshake-rate, --duration and --workers must be positive")
    connections = min(options.devices, options.connections or 1000)
    if connections < 1:
        raise BenchError("--connections must be >= 1")
    async with _data_dir(options, say) as data_dir:
        return await _run(options, connections, data_dir, say)


@contextlib.asynccontextmanager
async def _data_dir(options: Options, say: Say) -> AsyncIterator[Path]:
    if options.data_dir is not None:
        yield options.data_dir
        return
    tmp = Path(tempfile.mkdtemp(prefix="mdm-bench-kes-"))
    try:
        yield tmp
    finally:
        if options.keep_data:
            say(f"data kept in {tmp}")
        else:
            await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _run(options: Options, connections: int, data_dir: Path, say: Say) -> Report:
    report = Report()
    say(f"preparing {data_dir}...")
    config = await asyncio.to_thread(local.prepare, data_dir, database_url=options.database_url)
    if options.min_spacing is not None:
        _set_spacing(config.data_path, options.min_spacing)
        config = await asyncio.to_thread(local.prepare, data_dir, database_url=options.database_url)
    progress = Progress(say, "(a) prepare devices", options.devices, interval=5.0)
    prepared = await kes_prepare.prepare(config, options.devices, progress=progress.update)
    if prepared.added:
        progress.finish()
    report.prepare = {"devices": prepared.devices, "added": prepared.added, "seconds": prepared.seconds}
    driven = await kes_prepare.driven(config, connections)
    devices = [_spec(device_id, identity) for device_id, identity in driven]
    pin = spki_sha256(load_slot_certificate(config.certs_dir, "M").public_bytes(serialization.Encoding.DER))
    server = local.LocalServer(config)
    say("starting mdm serve...")
    await server.start(wait_s=300)
    report.setup = {
        "devices": options.devices, "connections": len(devices), "offered_rate": options.rate,
        "offered_handshake_rate": options.handshake_rate, "duration_s": options.duration,
        "workers": options.workers,
        "database": "PostgreSQL" if options.database_url else "SQLite (embedded)",
        "server_pid": server.pid, "cpus": os.cpu_count(), "load_before": load_average(),
    }
    report.rss_mib["start"] = rss_mib(server.pid)
    spacing = config.section(KesConfig).min_sync_spacing_seconds
    try:
        for mode in ("reuse", "handshake"):
            if mode in options.skip:
                continue
            rate = options.rate if mode == "reuse" else options.handshake_rate
            say(f"({'b' if mode == 'reuse' else 'c'}) {mode}: {len(devices)} devices, "
                f"{rate:g} syncs/s offered for {options.duration:g}s...")
            spec = kes_load.WorkerSpec("127.0.0.1", config.listeners.kes.port, (pin,), [],
                                       "reuse" if mode == "reuse" else "handshake", len(devices) / rate,
                                       options.duration, gap=spacing + 0.05)
            spy = options.py_spy if mode == "reuse" else None
            result = await _phase(spec, devices, options.workers, server.pid, spy)
            result["offered_rate"] = rate
            if spy is not None:
                report.profile = {"file": str(spy), **profile.summarise(spy)}
            setattr(report, mode, result)
            report.rss_mib[f"after_{mode}"] = rss_mib(server.pid)
    finally:
        await server.stop()
    return report


def _set_spacing(data_path: Path, spacing: float) -> None:
    import tomlkit

    from mdm.config import CONFIG_FILE

    path = data_path / CONFIG_FILE
    doc = tomlkit.parse(path.read_text())
    if "kes" not in doc:
        doc["kes"] = tomlkit.table()
    doc["kes"]["min_sync_spacing_seconds"] = spacing
    path.write_text(tomlkit.dumps(doc))


def _spec(device_id: int, identity: Identity) -> kes_load.DeviceSpec:
    return kes_load.DeviceSpec(device_id, identity.cert_pem(), identity.key_pem())


async def _phase(template: kes_load.WorkerSpec, devices: list[kes_load.DeviceSpec], workers: int,
                 server_pid: int, spy: Path | None = None) -> dict[str, Any]:
    mp = multiprocessing.get_context("spawn")
    ready, results, go = mp.Queue(), mp.Queue(), mp.Event()
    start_at = mp.Value("d", 0.0)
    shares = [devices[i::workers] for i in range(workers)]
    procs = []
    for share in shares:
        spec = kes_load.WorkerSpec(template.host, template.port, template.pins, share, template.mode,
                                   template.period, template.duration, template.gap)
        proc = mp.Process(target=kes_load.run_worker, args=(spec, ready, go, start_at, results), daemon=True)
        proc.start()
        procs.append(proc)
    try:
        oks = [await asyncio.to_thread(ready.get, True, 600) for _ in procs]
        start = time.time() + 1.0
        start_at.value = start
        go.set()
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu0 = cpu_seconds(server_pid)
        sampler = await profile.record(server_pid, template.duration - 1, spy) if spy else None
        rss_peak = 0.0
        while time.time() < start + template.duration:
            await asyncio.sleep(min(1.0, max(0.0, start + template.duration - time.time())))
            rss_peak = max(rss_peak, rss_mib(server_pid).get("VmRSS", 0.0))
        cpu1 = cpu_seconds(server_pid)
        if sampler is not None:
            _, err = await sampler.communicate()
            if sampler.returncode != 0:
                raise BenchError(f"py-spy failed: {err.decode().strip()[-300:]}")
        outs: list[kes_load.WorkerResult] = [await asyncio.to_thread(results.get, True, 120) for _ in procs]
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()
    return _summary(outs, oks, template.duration, cpu0, cpu1, rss_peak)


def _summary(outs: list[kes_load.WorkerResult], oks: list[bool], duration: float, cpu0: float | None,
             cpu1: float | None, rss_peak: float) -> dict[str, Any]:
    latencies = sorted(x for o in outs for x in o.latencies)
    errors: Counter[str] = Counter()
    setup_errors: Counter[str] = Counter()
    for o in outs:
        errors.update(o.errors)
        setup_errors.update(o.setup_errors)
    count = len(latencies)
    server_cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else math.nan
    generator_cpu = sum(o.cpu_seconds for o in outs)
    return {
        "syncs": count, "per_second": round(count / duration, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else math.nan,
        "errors": dict(errors), "setup_errors": dict(setup_errors), "missed": sum(o.missed for o in outs),
        "handshakes": sum(o.handshakes for o in outs), "workers_ready": sum(bool(x) for x in oks),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_sync": round(1000 * server_cpu / count, 3) if count else math.nan,
        "server_cpu_share": round(server_cpu / duration, 2),
        "generator_cpu_ms_per_sync": round(1000 * generator_cpu / count, 3) if count else math.nan,
        "server_rss_peak_mib": rss_peak,
    }


def render(report: Report) -> str:
    setup = report.setup
    lines = [f"mdm bench kes: {setup.get('devices')} devices enrolled, {setup.get('connections')} syncing, "
             f"{setup.get('workers')} generator processes, "
             f"{setup.get('database')}", f"  load before: {setup.get('load_before', '')}"]
    if report.prepare:
        p = report.prepare
        lines.append(f"  (a) prepare: {p['added']} added in {p['seconds']}s ({p['devices']} in all)")
    for label, phase in (("(b) reuse", report.reuse), ("(c) handshake", report.handshake)):
        if phase:
            lines.append(
                f"  {label}: {phase['offered_rate']:g}/s offered, {phase['per_second']} syncs/s, "
                f"p50 {phase['p50_ms']} ms, "
                f"p99 {phase['p99_ms']} ms, max {phase['max_ms']} ms; "
                f"server CPU {phase['server_cpu_ms_per_sync']} ms/sync ({phase['server_cpu_share']} cores), "
                f"generator {phase['generator_cpu_ms_per_sync']} ms/sync; "
                f"missed slots {phase['missed']}, errors {phase['errors'] or 'none'}"
                + (f", setup errors {phase['setup_errors']}" if phase["setup_errors"] else ""))
    lines.append(f"  server RSS (MiB): {report.rss_mib}")
    if report.profile:
        top = ", ".join(f"{name} {pct}%" for name, pct in report.profile["inclusive"][:12])
        lines.append(f"  server profile ({report.profile['samples']} samples, inclusive): {top}")
    return "\n".join(lines)
