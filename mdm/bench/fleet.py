"""``mdm bench fleet``: a fleet of N enrolled iOS devices on one local server.

Phases, each timed, the server's RSS sampled every second and its CPU read from /proc:
  (a) prepare  N devices written straight to the tables (``fleet_prepare``; reused when the data
               directory already holds them), the APNs contract fake started as the server's
               gateway, ``mdm serve`` started;
  (b) bulk     ``POST /api/v1/commands {"devices": "all", "type": "Block"}``: time until every
               device is queued (``GET /api/v1/bulk/{id}``), and RSS meanwhile;
  (c) wake-ups time from the request until the fake accepted a push for every device;
  (d) answers  M simulated devices poll when the fake accepts their push and answer with signed
               messages: time to 50 / 99 / 100 % of them completed, round trips per second;
  (e) idle     idle polls from the answering devices at N enrolled;
  (f) pages    ``GET /api/v1/devices``: first page, a deep page, filters;
  (g) storm    Authenticate + TokenUpdate for the M devices;
      cold     then a restart and cold first polls (``fleet_cold``: signed beforehand, once the
               server is ready, M of them or ``--cold-polls``).
The bulk operation is recalled at the end (what the silent devices did not fetch), so that the
next run on the same data directory starts from the same state (``fleet_recall``: its own
deadline, client timeouts retried while the server is busy recalling).

A phase that fails (a timeout, an HTTP error, a server that stopped answering) is recorded in the
report's ``errors`` and the run goes on with the next one: the report always holds everything
measured (``fleet_report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import tomlkit
from cryptography import x509

from mdm.bench import fleet_apns, fleet_cold, fleet_phases, fleet_prepare, fleet_recall, local
from mdm.bench.fleet_prepare import KeyType
from mdm.bench.fleet_report import Report, guarded, pushes_meanwhile
from mdm.bench.fleet_report import render as render  # the CLI's: run, then render
from mdm.bench.phases import Admin
from mdm.bench.progress import Progress, Say
from mdm.bench.stats import rss_kib
from mdm.config import CONFIG_FILE
from mdm.db.engine import Database
from mdm.push.config import PushConfig
from mdm.push.topic import read_topic
from mdm.push.worker_channel import WORKERS_REPORTING
from mdm.sim.fleet import Fleet


class FleetBenchError(Exception):
    pass


@dataclass
class Options:
    devices: int
    data_dir: Path
    answering: int | None = None  # default min(devices, 10,000)
    database_url: str = ""
    key_type: KeyType = "rsa"
    plain: bool = False
    command: str = "Block"
    concurrency: int = 50  # simulated devices' connections
    idle_seconds: float = 15.0
    page_repeat: int = 5
    timeout: float = 900.0  # for (b)-(d) together
    skip: tuple[str, ...] = ()  # phases to skip: idle, pages, storm, cold
    recall_timeout: float | None = None  # the final recall's deadline; default max(600, timeout)
    push_worker: str = "inline"  # push.worker: the dispatcher's worker in the server or a process
    push_workers: int = 1  # push.workers: worker processes (more than one: PostgreSQL, implies "process")
    push_worker_nice: int | None = None  # push.worker_nice: their nice value (None: the default)
    cold_polls: int | None = None  # cold first polls after the restart (default: the answering count)

    def recall_deadline(self) -> float:
        return self.recall_timeout if self.recall_timeout is not None else max(600.0, self.timeout)


def _set_push_workers(data_dir: Path, workers: int, nice: int | None) -> None:
    """``push.workers`` and ``push.worker_nice`` in the data directory's configuration (written on
    every run: a data directory reused from a run with other values keeps none of them)."""
    path = data_dir / CONFIG_FILE
    doc = tomlkit.parse(path.read_text())
    if "push" not in doc:
        doc["push"] = tomlkit.table()
    doc["push"]["workers"] = workers
    if nice is None:
        doc["push"].pop("worker_nice", None)
    else:
        doc["push"]["worker_nice"] = nice
    path.write_text(tomlkit.dumps(doc))


def answering_count(options: Options) -> int:
    return min(options.devices, options.answering if options.answering is not None else 10_000)


async def run(options: Options, say: Say) -> Report:
    if options.devices < 1 or (options.answering is not None and options.answering < 0):
        raise FleetBenchError("--devices must be >= 1 and --answering >= 0")
    if options.push_workers < 1:
        raise FleetBenchError("--push-workers must be >= 1")
    if options.push_workers > 1 and not options.database_url:
        raise FleetBenchError("--push-workers > 1 needs PostgreSQL (--database-url): SQLite has one writer")
    if options.cold_polls is not None and options.cold_polls < 1:
        raise FleetBenchError("--cold-polls must be >= 1")
    if options.push_worker_nice and not options.database_url:
        raise FleetBenchError("--push-worker-nice needs PostgreSQL (--database-url): on SQLite the worker "
                              "holds the write lock")
    push_worker = "process" if options.push_workers > 1 else options.push_worker
    report = Report()
    data_dir = options.data_dir
    say(f"preparing {data_dir}...")
    config = await asyncio.to_thread(local.prepare, data_dir, database_url=options.database_url,
                                     plain=options.plain, pool_size=10)
    async with fleet_apns.running(data_dir, avoid=local.listener_ports(config)) as fake:
        fleet_apns.configure(data_dir, fake.info, push_worker=push_worker)
        _set_push_workers(data_dir, options.push_workers, options.push_worker_nice)
        config = local.load(data_dir)
        topic = read_topic(config).topic
        t0 = time.perf_counter()
        progress = Progress(say, "(a) prepare devices", options.devices, interval=5.0)
        prepared = await fleet_prepare.prepare(config, options.devices, topic=topic,
                                               key_type=options.key_type, progress=progress.update)
        if prepared.added:
            progress.finish()
        rate = round(prepared.added / prepared.seconds, 1) if prepared.added else None
        report.prepare = {"devices": prepared.devices, "added": prepared.added, "seconds": prepared.seconds,
                          "per_second": rate, "key_type": prepared.key_type}
        members = await fleet_prepare.driven_members(config, answering_count(options))
        group_id = await _group(config)
        report.prepare["members_loaded_s"] = round(time.perf_counter() - t0 - prepared.seconds, 1)
        if options.database_url:
            say("VACUUM (ANALYZE) of the tables a run writes, CHECKPOINT...")
        vacuumed = await fleet_prepare.vacuum(config, VACUUMED_TABLES)
        if vacuumed is not None:
            report.prepare["vacuum_s"], report.prepare["checkpoint"] = vacuumed
        server = local.LocalServer(config)
        say("starting mdm serve...")
        await server.start(wait_s=300)
        report.setup = {"devices": options.devices, "answering": len(members), "data_dir": str(data_dir),
                        "database": "PostgreSQL" if options.database_url else "SQLite (embedded)",
                        "transport": "plain HTTP" if options.plain else "TLS", "command": options.command,
                        "server_pid": server.pid, "apns_fake_pid": fake.pid,
                        "push_worker": push_worker, "push_workers": options.push_workers,
                        "push_worker_nice": PushConfig(worker_nice=options.push_worker_nice).nice(
                            options.database_url or "sqlite")}
        report.rss_mib["start"] = _rss(server.pid)
        roots = [x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())]
        admin = Admin(server.url("admin"), local.admin_token(data_dir), roots)
        try:
            await _measure(options, report, server, admin, fake, members, group_id, topic, roots, say)
        finally:
            await admin.close()
            await server.stop()
    return report


async def _measure(options: Options, report: Report, server: local.LocalServer, admin: Admin,
                   fake: fleet_apns.FakeProcess, members: list[Any], group_id: int | None, topic: str,
                   roots: list[x509.Certificate], say: Say) -> None:
    ios = server.url("ios")
    pending = fleet_recall.pending_path(server.config.data_path)  # this run's bulk, until recalled

    def new_fleet() -> Fleet:
        return Fleet(members, server_url=f"{ios}/mdm/server", checkin_url=f"{ios}/mdm/checkin", topic=topic,
                     trusted_roots=roots, concurrency=options.concurrency)

    await fleet_recall.recall_left_over(admin, pending, say, options.recall_deadline())
    if report.setup.get("push_worker") == "process":
        report.setup["push_workers_up_s"] = await workers_up(admin, options.push_workers, say=say)
    answered: list[Any] = []
    async with fleet_phases.monitoring(server.pid) as monitor, new_fleet() as fleet, \
            _autovacuum_stand_in(server, report, say):
        say(f"(b) bulk {options.command} to all {options.devices} devices; "
            f"{len(members)} answer when woken...")
        async with guarded(report, "bulk", say):
            phases = await fleet_phases.bulk_and_answers(
                admin, fake, fleet, members, devices=options.devices, command=options.command,
                concurrency=options.concurrency, limit_s=options.timeout, say=say, pid=server.pid,
                monitor=monitor, on_bulk=lambda bulk_id: pending.write_text(str(bulk_id)))
            report.bulk, report.wakeups, report.answers = phases["bulk"], phases["wakeups"], phases["answers"]
            # Idle polls and the storm use the devices that answered: their queues are empty.
            answered = [m for m in members if m.udid in phases["answered"]]
        report.rss_mib["after_bulk"] = _rss(server.pid)
        if "idle" not in options.skip and answered:
            async with guarded(report, "idle", say):
                async with pushes_meanwhile(fake) as pushes:
                    report.idle = await fleet_phases.idle(
                        fleet, answered, duration=options.idle_seconds, concurrency=options.concurrency,
                        say=say, pid=server.pid)
                report.idle |= pushes
        if "pages" not in options.skip:
            first_id = min((m.device_id for m in members if m.device_id is not None), default=1)
            async with guarded(report, "pages", say):
                report.pages = await fleet_phases.pages(
                    admin, devices=options.devices, first_id=first_id, group_id=group_id,
                    probe=fleet_prepare.udid(options.devices // 2)[:-2], repeat=options.page_repeat, say=say)
        if "storm" not in options.skip and answered:
            async with guarded(report, "storm", say):
                async with pushes_meanwhile(fake) as pushes:
                    report.storm = await fleet_phases.storm(fleet, answered, say=say, pid=server.pid)
                report.storm |= pushes
        bulk_id = report.bulk.get("bulk_id") if report.bulk else fleet_recall.pending_bulk(pending)
        if bulk_id is not None:
            await fleet_recall.recall_at_the_end(admin, report, int(bulk_id), pending=pending,
                                    deadline_s=options.recall_deadline(), say=say)
        report.rss_mib["peak"] = round(rss_kib(server.pid).get("VmHWM", 0) / 1024, 1)
        report.rss_mib["end"] = _rss(server.pid)
    if "cold" not in options.skip and answered:
        async with guarded(report, "cold_polls", say):
            say("restarting mdm serve for cold polls...")
            await server.stop()
            await server.start(wait_s=300)
            t_ready = time.perf_counter()
            if report.setup.get("push_worker") == "process":
                await workers_up(admin, options.push_workers, say=say)
            await fleet_cold.settle(server.pid)
            ready_s = round(time.perf_counter() - t_ready, 2)
            count = options.cold_polls or len(answered)
            fleet_members = members if count <= len(members) else await fleet_prepare.driven_members(
                server.config, count)
            cold = fleet_cold.cold_members(answered, fleet_members, count)
            async with new_fleet() as fleet:
                async with pushes_meanwhile(fake) as pushes:
                    report.cold_polls = await fleet_cold.cold_polls(
                        fleet, cold, say=say, pid=server.pid, database_url=server.config.database_url)
                report.cold_polls |= pushes | {"ready_after_healthz_s": ready_s}
            report.rss_mib["after_cold_polls"] = _rss(server.pid)


async def workers_up(admin: Admin, workers: int, *, say: Say, timeout_s: float = 120.0) -> float:
    """Wait until the server's ``workers`` push worker processes run and have reported (the
    ``mdm_push_worker_processes`` gauge of /metrics): a bulk request made while they start would
    time their start-up (and their recovery pass) as queuing and wake-ups. The seconds waited."""
    url = admin.base.removesuffix("/api/v1") + "/metrics"
    t0 = time.perf_counter()
    up = 0
    while time.perf_counter() - t0 < timeout_s:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with admin.session.get(url) as response:
                if response.status == 200:
                    up = reporting_workers(await response.text())
                    if up >= workers:
                        return round(time.perf_counter() - t0, 1)
        await asyncio.sleep(0.2)
    raise FleetBenchError(f"{up} of {workers} push worker process(es) up after {timeout_s:.0f}s")


def reporting_workers(exposition: str) -> int:
    """The value of ``mdm_push_worker_processes`` in a /metrics text (0 when absent)."""
    for line in exposition.splitlines():
        if line.startswith(WORKERS_REPORTING + " "):
            return int(float(line.split()[1]))
    return 0


# Tables a bulk command fills while the bench runs (ANALYZEd when PostgreSQL has no autovacuum).
BULK_TABLES = ("commands", "command_queue", "command_journal", "push_wakeups", "bulk_operations")
# VACUUMed (ANALYZE) before each run on PostgreSQL: what a run writes, the devices' rows included
# (their push state, and the row locks of the commands' foreign key), and the iOS devices' rows
# (the cold polls' binding probe and the check-ins read them by fingerprint and UDID).
VACUUMED_TABLES = (*BULK_TABLES, "bulk_skipped", "events", "devices", "ios_devices")


@contextlib.asynccontextmanager
async def _autovacuum_stand_in(server: local.LocalServer, report: Report, say: Say) -> AsyncIterator[None]:
    """On a PostgreSQL instance with autovacuum off (a test server), the planner would keep
    the statistics of empty command tables through the whole run and plan the hot statements as
    if the queue were empty; ANALYZE them every 15 s, as autovacuum would after a bulk load."""
    from mdm.bench import store_fleet

    db = Database(server.config.database_url, 1)
    try:
        async with db.session() as session:
            off = await store_fleet.autovacuum_off(session)
            settings = await store_fleet.settings(session)
        if settings:  # the figures depend on them (shared_buffers above all at 10^6)
            report.setup["postgresql"] = settings
        if not off:
            yield
            return
        say("PostgreSQL autovacuum is off: the bench ANALYZEs the command tables every 15 s")
        report.setup["autovacuum"] = "off: ANALYZE every 15 s by the bench"

        async def loop() -> None:
            while True:
                await asyncio.sleep(15)
                async with db.session() as session:
                    await store_fleet.analyze(session, BULK_TABLES)
                    await session.commit()

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await db.close()


async def _group(config: Any) -> int | None:
    from mdm.bench import store_fleet

    db = Database(config.database_url, 1)
    try:
        async with db.session() as session:
            return await store_fleet.group_id(session, fleet_prepare.GROUP)
    finally:
        await db.close()


def _rss(pid: int) -> float:
    return round(rss_kib(pid).get("VmRSS", 0) / 1024, 1)
