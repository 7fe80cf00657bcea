"""``[push] workers = N`` (issue 12): several push worker processes share the owed wake-ups
through the take's ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (every device pushed once, counted
once in the server's status and /metrics; a killed worker's leased rows go out after its lease);
SQLite (one writer) refuses more than one at config load; the re-push budget is split between
them; ``push.repush_per_second`` is taken by ``mdm reload`` without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from apns_support import Env, apns_env
from sqlalchemy import select
from test_push_e2e import _write_identity

from mdm.bench.fleet import reporting_workers
from mdm.config import ConfigError
from mdm.config_load import load_config
from mdm.config_sections import SECTIONS, load
from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PIPELINE, PushDispatcher
from mdm.push.keys import DISPATCHER
from mdm.push.plugin import SUPERVISOR
from mdm.push.service_stats import ServiceStats
from mdm.push.supervisor import WorkerSupervisor
from mdm.push.tables import PushWakeup
from mdm.push.worker_channel import WorkerView
from mdm.server.runtime import Server

PG = bool(os.environ.get("MDM_TEST_DATABASE_URL"))
DEVICES = 3000
BATCH = 50
LEASE = 3
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}


class PerToken:
    """What the APNs fake accepted, per token."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def on_push(self, token: str, topic: str, payload: dict[str, Any]) -> None:
        self.counts[token] += 1


@pytest.fixture
def pushed() -> PerToken:
    return PerToken()


@pytest.fixture
async def apns(tmp_path: Path, pushed: PerToken) -> AsyncIterator[Env]:
    async with apns_env(tmp_path / "apns", on_push=pushed.on_push, record=False) as env:
        yield env


@pytest.fixture
def extra_config(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if "apns" not in request.fixturenames:
        return ""
    apns: Env = request.getfixturevalue("apns")
    cert, key = _write_identity(tmp_path / "push-id", apns.identity.cert_pem, apns.identity.key_pem)
    return (
        f'[apns]\ncertificate_file = "{cert}"\nkey_file = "{key}"\nbase_url = "{apns.fake.url}"\n'
        f'ca_file = "{apns.certs.server_ca}"\n[push]\nworker = "process"\nworkers = 2\nworker_nice = 5\n'
        f"batch_size = {BATCH}\nconcurrency = 30\nlease_seconds = {LEASE}\n"
    )


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            found = check()
            if found if isinstance(found, bool) else await found:
                return
            await asyncio.sleep(0.05)


async def add_devices(db: Database, n: int) -> dict[int, str]:
    """n enrolled iOS devices with valid tokens, written in one transaction: id -> token."""
    async with db.transaction() as session:
        devices = [
            Device(protocol=Protocol.IOS.value, identifier=f"W{i:06d}", inventory={}, attributes={},
                   push_token=f"{i + 1:064x}", push_magic=f"magic-{i}", push_valid=True,
                   enrolled_at=datetime.now(UTC))
            for i in range(n)
        ]
        session.add_all(devices)
        await session.flush()
        return {d.id: str(d.push_token) for d in devices}


async def both_workers(server: Server) -> WorkerSupervisor:
    supervisor: WorkerSupervisor = server.ctx.services[SUPERVISOR]
    await eventually(lambda: len(supervisor.slots) == 2 and all(
        supervisor.view.reported(slot.index) for slot in supervisor.slots))
    return supervisor


async def sent_total(api: httpx.AsyncClient) -> tuple[int, float]:
    """(sent in /push/status, mdm_push_sent_total in /metrics)."""
    status = (await api.get("/api/v1/push/status")).json()
    text = (await api.get("/metrics")).text
    [line] = [x for x in text.splitlines() if x.startswith('mdm_push_sent_total{service="apns"}')]
    return int(status["services"]["apns"]["sent"]), float(line.split()[-1])


needs_pg = pytest.mark.skipif(not PG, reason="several push workers need PostgreSQL (SQLite refuses them)")


@needs_pg
async def test_two_workers_push_every_device_once_and_the_server_sums_their_counts(
    server: Server, db: Database, api: httpx.AsyncClient, apns: Env, pushed: PerToken,
) -> None:
    supervisor = await both_workers(server)
    pids = {p.pid for p in supervisor.processes()}
    assert len(pids) == 2 and os.getpid() not in pids
    # worker_nice: the workers run at the server's nice value + 5 (the server's work goes first)
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} == {os.getpriority(os.PRIO_PROCESS, 0) + 5}
    assert reporting_workers((await api.get("/metrics")).text) == 2  # (what mdm bench fleet waits for)
    tokens = await add_devices(db, DEVICES)
    await server.ctx.services[DISPATCHER].wake_many(list(tokens), "command")

    await eventually(lambda: len(pushed.counts) == DEVICES)
    await asyncio.sleep(0.5)  # (a second push would show here)
    assert set(pushed.counts) == set(tokens.values())
    assert set(pushed.counts.values()) == {1}  # every device pushed exactly once
    # Both workers took part (SKIP LOCKED shared the rows), and the server shows their sum.
    await eventually(lambda: all(
        supervisor.view.current[slot.index]["services"]["apns"]["sent"] > 0 for slot in supervisor.slots))

    async def summed() -> bool:
        return await sent_total(api) == (DEVICES, float(DEVICES))

    await eventually(summed, timeout=10)
    light = (await api.get("/api/v1/status")).json()
    [push] = [area for area in light["areas"] if area["area"] == "push"]
    assert push["details"]["services"]["apns"]["sent"] == DEVICES
    await eventually(lambda: owed(api, 0), timeout=10)


@needs_pg
async def test_a_worker_killed_midway_leaves_its_rows_to_the_others_after_its_lease(
    server: Server, db: Database, api: httpx.AsyncClient, apns: Env, pushed: PerToken,
) -> None:
    supervisor = await both_workers(server)
    supervisor.min_backoff = 30.0  # the killed one stays away: the survivor takes its rows
    victim = supervisor.slots[1].process
    assert victim is not None
    tokens = await add_devices(db, DEVICES)
    await server.ctx.services[DISPATCHER].wake_many(list(tokens), "command")

    await eventually(lambda: sum(pushed.counts.values()) >= DEVICES // 5, timeout=30)
    os.kill(victim.pid, signal.SIGKILL)
    await eventually(lambda: victim.returncode is not None, timeout=10)
    assert len(pushed.counts) < DEVICES  # mid-way
    leased = await leased_rows(db)  # taken by a worker, not answered yet: the killed one's among them
    assert leased
    await eventually(lambda: len(pushed.counts) == DEVICES)
    assert supervisor.slots[1].starts == 1  # not restarted meanwhile: the survivor sent the rest
    assert set(pushed.counts) == set(tokens.values())  # nobody lost
    # At most what the killed worker had taken but not recorded is pushed twice.
    assert sum(pushed.counts.values()) - DEVICES <= PIPELINE * BATCH
    await eventually(lambda: owed(api, 0), timeout=LEASE + 10)


async def leased_rows(db: Database) -> list[int]:
    later = datetime.now(UTC) + timedelta(seconds=LEASE / 2)
    async with db.session() as session:
        rows = await session.scalars(select(PushWakeup.device_id).where(PushWakeup.due_at > later))
        return list(rows)


async def owed(api: httpx.AsyncClient, n: int) -> bool:
    return bool((await api.get("/api/v1/push/status")).json()["owed"] == n)


@needs_pg
async def test_a_reload_that_changes_the_number_of_workers_starts_that_many(
    server: Server, apns: Env, config: Any,
) -> None:
    supervisor = await both_workers(server)
    server.reloader.load = lambda: load(config.data_path, env=CLEAN_ENV)
    path = config.data_path / "mdm.toml"
    path.write_text(path.read_text().replace("workers = 2", "workers = 3"))
    status = await server.reloader.reload()
    assert status["ok"] and "push.workers" in status["applied"], status
    await eventually(lambda: len(supervisor.slots) == 3 and all(
        supervisor.view.reported(slot.index) for slot in supervisor.slots))
    assert len({p.pid for p in supervisor.processes()}) == 3


@needs_pg
async def test_a_reload_of_the_repush_rate_gives_each_running_worker_its_share(
    server: Server, apns: Env, config: Any,
) -> None:
    supervisor = await both_workers(server)
    pids = {p.pid for p in supervisor.processes()}
    server.reloader.load = lambda: load(config.data_path, env=CLEAN_ENV)
    path = config.data_path / "mdm.toml"
    path.write_text(path.read_text() + "repush_per_second = 8\n")  # (the file ends in [push])
    status = await server.reloader.reload()
    assert status["ok"] and status["applied"] == ["push.repush_per_second"], status

    def shares() -> list[float]:
        return [supervisor.view.current.get(slot.index, {}).get("settings", {}).get("repush_per_second")
                for slot in supervisor.slots]

    await eventually(lambda: shares() == [4, 4], timeout=10)  # 8 per second across the two
    assert {p.pid for p in supervisor.processes()} == pids  # nobody restarted


def _write(config_dir: Path, database_url: str, push: str) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "mdm.toml").write_text(f'[database]\nurl = "{database_url}"\n[push]\n{push}\n')
    return config_dir


def test_sqlite_refuses_two_workers_at_config_load(tmp_path: Path) -> None:
    directory = _write(tmp_path / "d", f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3",
                       'worker = "process"\nworkers = 2')
    with pytest.raises(ConfigError) as refused:
        load_config(directory, env={}, sections=SECTIONS)
    message = str(refused.value)
    assert "[push] workers = 2 needs PostgreSQL" in message and "SQLite has one writer" in message
    # One worker process on SQLite, and two on PostgreSQL, are fine.
    load_config(_write(tmp_path / "one", f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3",
                       'worker = "process"\nworkers = 1'), env={}, sections=SECTIONS)
    config = load_config(_write(tmp_path / "pg", "postgresql+asyncpg://u@127.0.0.1/db",
                                'worker = "process"\nworkers = 2'), env={}, sections=SECTIONS)
    assert config.section(PushConfig).workers == 2


def test_sqlite_refuses_a_nice_worker_at_config_load(tmp_path: Path) -> None:
    """On SQLite the worker holds the one write lock: niced, it would wait for a CPU holding it."""
    directory = _write(tmp_path / "d", f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3",
                       'worker = "process"\nworker_nice = 5')
    with pytest.raises(ConfigError) as refused:
        load_config(directory, env={}, sections=SECTIONS)
    assert "worker_nice = 5 needs PostgreSQL" in str(refused.value)
    config = load_config(_write(tmp_path / "pg", "postgresql+asyncpg://u@127.0.0.1/db",
                                'worker = "process"\nworker_nice = 5'), env={}, sections=SECTIONS)
    assert config.section(PushConfig).worker_nice == 5


def test_the_workers_are_niced_by_default_on_postgresql_only() -> None:
    assert PushConfig().nice("postgresql+asyncpg://u@127.0.0.1/db") == 10
    assert PushConfig().nice("sqlite+aiosqlite:///x.sqlite3") == 0
    assert PushConfig(worker_nice=0).nice("postgresql+asyncpg://u@127.0.0.1/db") == 0
    assert PushConfig(worker_nice=3).nice("postgresql+asyncpg://u@127.0.0.1/db") == 3


def test_several_workers_need_the_worker_process(tmp_path: Path) -> None:
    directory = _write(tmp_path / "d", "postgresql+asyncpg://u@127.0.0.1/db", "workers = 2")
    with pytest.raises(ConfigError, match='workers = 2 needs worker = "process"'):
        load_config(directory, env={}, sections=SECTIONS)


def test_each_worker_runs_with_its_share_of_the_repush_budget() -> None:
    config = PushConfig(worker="process", workers=4, repush_per_second=500)
    share = config.worker_share()
    assert share.repush_per_second == 125 and share.workers == 4 and config.repush_per_second == 500
    assert PushConfig(repush_per_second=500).worker_share().repush_per_second == 500


def test_the_server_sums_the_workers_counts_and_keeps_what_ended_ones_counted() -> None:
    def snap(sent: int, failed: int, owed: float) -> dict[str, Any]:
        return {
            "services": {"apns": {"configured": True, "circuit_open": False, "sent": sent,
                                  "failures": {"timeout": failed}, "last_success_at": None}},
            "metrics": [
                {"name": "mdm_push_sent", "doc": "d", "type": "counter",
                 "samples": [["mdm_push_sent_total", {"service": "apns"}, float(sent)]]},
                {"name": "mdm_push_owed", "doc": "o", "type": "gauge",
                 "samples": [["mdm_push_owed", {}, owed]]},
            ],
        }

    view = WorkerView()
    stats = {"apns": ServiceStats(configured=True), "fcm": ServiceStats(configured=False)}
    view.take(snap(5, 1, 100), slot=0)
    view.take(snap(7, 2, 90), slot=1)
    view.apply(stats)
    assert (stats["apns"].sent, stats["apns"].failures) == (12, {"timeout": 3})
    view.worker_ended(slot=1)
    view.take(snap(1, 0, 80), slot=1)  # slot 1's next worker
    view.apply(stats)
    assert (stats["apns"].sent, stats["apns"].failures) == (13, {"timeout": 3})
    families = {f.name: [(s.name, s.value) for s in f.samples] for f in view.families()}
    assert families["mdm_push_sent"] == [("mdm_push_sent_total", 13.0)]
    assert families["mdm_push_owed"] == [("mdm_push_owed", 100.0)]  # one owed count, not a sum


async def test_a_reload_of_repush_per_second_takes_effect_without_a_restart(
    server: Server, config: Any,
) -> None:
    dispatcher: PushDispatcher = server.ctx.services[DISPATCHER]
    assert dispatcher.config.repush_per_second == 500
    server.reloader.load = lambda: load(config.data_path, env=CLEAN_ENV)
    path = config.data_path / "mdm.toml"
    path.write_text(path.read_text() + "\n[push]\nrepush_per_second = 8\n")
    status = await server.reloader.reload()
    assert status["ok"] and status["applied"] == ["push.repush_per_second"], status
    assert status["restart_needed"] == []
    # The budget reads it at each batch: 16 deferred rows now take 2 s of it, not 16/500 s.
    now = datetime.now(UTC)
    assert (dispatcher.budget.defer_until(now, 16) - now).total_seconds() == pytest.approx(2.0)
    assert dispatcher.budget.room() == dispatcher.config.batch_size  # the burst: one batch
