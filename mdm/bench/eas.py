"""``mdm bench eas``: one EAS discovery of a generated Exchange organisation (N mailboxes, M device
partnerships) into a fresh database, measured: wall time, devices/s, CPU, peak RSS and (with
``--heap``) the Python heap's peak; then a second run of the unchanged organisation (the steady
state of a periodic discovery: reads and compares, writes refresh rows, no events).

The runner is pluggable (``RUNNERS``): "local" runs the cmdlets in-process over the organisation
(``LocalOrgRunner``: the discovery's own cost, without the wire). "psrp" goes through the wire:
``ExchangeRunner`` -> WSMan/PSRP over HTTPS -> the contract fake in its own process, Kerberos from
a real MIT KDC (``_PsrpWorld``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mdm.bench.stats import load_average, rss_mib
from mdm.db import migrate
from mdm.db.engine import Database
from mdm.devfakes.exchange_local import LocalOrgRunner
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.seams import CmdletRunner
from mdm.eas.service_discovery import Discovery, RunResult

Say = Callable[[str], None]
PRINCIPAL = "svc-mdm@CORP.EXAMPLE.COM"


class BenchError(Exception):
    pass


@dataclass
class Options:
    mailboxes: int = 50_000
    devices: int = 100_000
    seed: int = 0
    batch: int = 100
    concurrency: int = 4
    runner: str = "local"
    database_url: str = ""  # default: SQLite in a temporary directory
    heap: bool = False  # tracemalloc (slows the run down several times)
    second_run: bool = True


@dataclass
class Report:
    options: dict[str, Any]
    generate_seconds: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)
    rss_mib_before: float = 0.0
    rss_mib_peak: float = 0.0
    heap_peak_mib: float | None = None
    load: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _local_runner(org: Organisation, options: Options) -> CmdletRunner:
    return LocalOrgRunner(org, principal=PRINCIPAL)


class _PsrpWorld:
    """``mdm bench eas --runner psrp``: a real MIT realm (k5test), the PSRP contract fake in a
    process of its own (its CPU is not the service's) over the same generated organisation, and
    the production ``ExchangeRunner`` logging in with the service account's keytab."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.kdc: Any = None
        self.fake: subprocess.Popen[str] | None = None
        self.env_before: dict[str, str | None] = {}

    async def start(self) -> CmdletRunner:
        from mdm.devfakes.kdc import start_realm
        from mdm.eas.config import EasConfig
        from mdm.eas.runner import ExchangeRunner

        self.kdc = kdc = await asyncio.to_thread(start_realm)
        env = {"KRB5_CONFIG": str(kdc.krb5_conf), "KRB5RCACHEDIR": str(kdc.tmpdir),
               "KRB5CCNAME": f"FILE:{kdc.tmpdir / 'bench.ccache'}"}
        self.env_before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        o = self.options
        argv = [sys.executable, "-m", "mdm.devfakes.exchange_psrp", "--mailboxes", str(o.mailboxes),
                "--devices", str(o.devices), "--seed", str(o.seed), "--keytab", str(kdc.service_keytab),
                "--tls", "--url-host", kdc.host]
        self.fake = await asyncio.to_thread(
            subprocess.Popen, argv,
            stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        )
        url = ca = ""
        assert self.fake.stdout is not None
        while True:
            line = await asyncio.to_thread(self.fake.stdout.readline)
            if not line:
                raise BenchError("the PSRP fake exited before it was ready")
            key, _, value = line.strip().partition(" ")
            url, ca = (value, ca) if key == "URL" else (url, value) if key == "CA" else (url, ca)
            if key == "READY":
                break
        port = urlsplit(url).port
        config = EasConfig(
            enabled=True, servers=[f"{kdc.host}:{port}"], transport="https", ca_file=ca,
            principal=kdc.svc_principal, keytab_file=str(kdc.svc_keytab), concurrency=o.concurrency,
            discovery_batch=o.batch, cmdlet_timeout_seconds=3600.0, connect_timeout_seconds=30.0,
        )
        return ExchangeRunner(config, Path(kdc.tmpdir) / "data")

    def stop(self) -> None:
        if self.fake is not None:
            self.fake.terminate()
            self.fake.wait(30)
        if self.kdc is not None:
            from mdm.devfakes.kdc import stop_realm

            stop_realm(self.kdc)
        for k, v in self.env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


RUNNERS = ("local", "psrp")


@contextlib.asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    tmp = None if url else Path(tempfile.mkdtemp(prefix="mdm-bench-eas-"))
    db = Database(url or f"sqlite+aiosqlite:///{Path(tmp or '.') / 'bench.sqlite3'}")
    try:
        await migrate.upgrade(db)
        yield db
    finally:
        await db.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


async def _sample_rss(peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib(os.getpid()).get("VmRSS", 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def _run_row(result: RunResult, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "outcome": result.outcome,
        "mailboxes": result.mailboxes,
        "devices": result.devices,
        "policies": result.policies,
        "failed_mailboxes": result.failed_mailboxes,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "devices_per_second": round(result.devices / wall, 1) if wall > 0 else None,
        "mailboxes_per_second": round(result.mailboxes / wall, 1) if wall > 0 else None,
    }


async def run(options: Options, say: Say) -> Report:
    if options.mailboxes < 1 or options.devices < 0:
        raise BenchError("--mailboxes must be at least 1 and --devices not negative")
    if options.runner not in RUNNERS:
        raise BenchError(f"--runner must be one of {sorted(RUNNERS)}")
    report = Report(options=asdict(options), load=load_average())
    say(f"generating {options.mailboxes} mailboxes, {options.devices} devices ...")
    t0 = time.monotonic()
    org = Organisation.generate(
        mailboxes=options.mailboxes, devices=options.devices, seed=options.seed, record_calls=False
    )
    report.generate_seconds = round(time.monotonic() - t0, 2)
    world = _PsrpWorld(options) if options.runner == "psrp" else None
    runner: CmdletRunner = await world.start() if world is not None else await _local_runner(org, options)
    peak = [0.0]
    stop = asyncio.Event()
    try:
        async with _database(options.database_url) as db:
            report.rss_mib_before = rss_mib(os.getpid()).get("VmRSS", 0.0)
            sampler = asyncio.create_task(_sample_rss(peak, stop))
            if options.heap:
                tracemalloc.start()
            for n in range(2 if options.second_run else 1):
                say(f"discovery run {n + 1} ...")
                c0, w0 = time.process_time(), time.monotonic()
                result = await Discovery(
                    db, runner, batch=options.batch, concurrency=options.concurrency
                ).run(runner_name="bench")
                report.runs.append(_run_row(result, time.monotonic() - w0, time.process_time() - c0))
                say(f"  {report.runs[-1]}")
                if result.outcome != "ok":
                    raise BenchError(f"discovery {result.outcome}: {result.error}")
            if options.heap:
                report.heap_peak_mib = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
                tracemalloc.stop()
            stop.set()
            await sampler
    finally:
        stop.set()
        await runner.close()
        if world is not None:
            world.stop()
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.rss_mib_peak = round(max(peak[0], hwm), 1)
    return report


def render(report: Report) -> str:
    o = report.options
    lines = [
        f"EAS discovery: {o['mailboxes']} mailboxes, {o['devices']} devices, runner {o['runner']}, "
        f"batch {o['batch']}, concurrency {o['concurrency']}, "
        f"database {o['database_url'] or 'SQLite (temporary)'}",
        f"  organisation generated in {report.generate_seconds} s",
    ]
    for n, r in enumerate(report.runs, 1):
        kind = "first (all new)" if n == 1 else "second (unchanged)"
        lines.append(
            f"  run {n}, {kind}: {r['wall_seconds']} s, {r['devices_per_second']} devices/s, "
            f"{r['mailboxes_per_second']} mailboxes/s, CPU {r['cpu_seconds']} s, outcome {r['outcome']}"
        )
    lines.append(
        f"  RSS before discovery {report.rss_mib_before} MiB (the generated organisation included), "
        f"peak {report.rss_mib_peak} MiB"
    )
    if report.heap_peak_mib is not None:
        lines.append(f"  Python heap peak during discovery (tracemalloc): {report.heap_peak_mib} MiB")
    lines.append(f"  load: {report.load}")
    return "\n".join(lines)
