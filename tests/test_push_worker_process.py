"""``[push] worker = "process"``: the dispatcher's worker runs in a process of its own, started
and supervised by the server, over real sockets to the APNs contract fake. The server only
records the owed wake-ups; the child pushes them, reports its counters (the API, /metrics),
counts a bulk operation's woken devices, is restarted when killed, and goes with the server."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from apns_support import Env, apns_env
from ios_support import Phone, new_phone
from test_push_e2e import Woken, _write_identity

from mdm.bench.fleet import reporting_workers
from mdm.config import Config
from mdm.config_sections import load
from mdm.db.engine import Database
from mdm.devfakes.certs import push_certificate
from mdm.pki import services as pki_services
from mdm.plugins import PLUGINS
from mdm.push.plugin import SUPERVISOR
from mdm.push.supervisor import WorkerSupervisor
from mdm.push.transports import APNS_CLIENT
from mdm.server.runtime import Server, open_context

TOKEN = "01" * 32
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}


@pytest.fixture
def fleet() -> Woken:
    return Woken()


@pytest.fixture
async def apns(tmp_path: Path, fleet: Woken) -> AsyncIterator[Env]:
    async with apns_env(tmp_path / "apns", on_push=fleet.on_push) as env:
        yield env


@pytest.fixture
def extra_config(apns: Env, tmp_path: Path) -> str:
    cert, key = _write_identity(tmp_path / "push-id", apns.identity.cert_pem, apns.identity.key_pem)
    return (
        f'[apns]\ncertificate_file = "{cert}"\nkey_file = "{key}"\nbase_url = "{apns.fake.url}"\n'
        # worker_nice 0: on PostgreSQL the worker would run at nice 10 by default, and these tests
        # time what it does on a CI machine whose cores the other tests keep busy
        f'ca_file = "{apns.certs.server_ca}"\n[push]\nworker = "process"\nworker_nice = 0\n'
    )


def supervisor_of(server: Server) -> WorkerSupervisor:
    return server.ctx.services[SUPERVISOR]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def running_worker(server: Server) -> int:
    """The pid of the worker process once it reported (it is up and its dispatcher built)."""
    supervisor = supervisor_of(server)

    async def reported() -> bool:
        return supervisor.process is not None and supervisor.view.reported()

    await eventually(reported)
    assert supervisor.process is not None
    return supervisor.process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def enrolled(server: Server, db: Database, ios: httpx.AsyncClient, fleet: Woken, token: str) -> Phone:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.checkin(ios, phone.authenticate())
    r = await phone.checkin(ios, phone.token_update(bytes.fromhex(token)))
    assert r.status_code == 200
    fleet.ios = ios
    fleet.phones[token] = phone
    return phone


async def send_block(api: httpx.AsyncClient, phone: Phone) -> str:
    [device] = (await api.get("/api/v1/devices", params={"q": phone.udid})).json()["items"]
    sent = await api.post(f"/api/v1/devices/{device['id']}/commands", json={"type": "Block"})
    assert sent.status_code == 201, sent.text
    return str(sent.json()["guid"])


async def test_the_worker_process_pushes_and_the_server_shows_its_counts(
    server: Server, api: httpx.AsyncClient, db: Database, ios: httpx.AsyncClient, fleet: Woken,
) -> None:
    pid = await running_worker(server)
    assert pid != os.getpid() and alive(pid)
    phone = await enrolled(server, db, ios, fleet, TOKEN)
    guid = await send_block(api, phone)
    udid, answered = await asyncio.wait_for(fleet.answered.get(), timeout=10)
    assert (udid, answered) == (phone.udid, guid)

    async def counted() -> bool:
        status = (await api.get("/api/v1/push/status")).json()
        return bool(status["services"]["apns"]["sent"] >= 1)

    await eventually(counted, timeout=10)
    status = (await api.get("/api/v1/push/status")).json()
    apns = status["services"]["apns"]
    assert apns["configured"] is True and apns["circuit_open"] is False
    light = (await api.get("/api/v1/status")).json()
    [push] = [area for area in light["areas"] if area["area"] == "push"]
    assert push["details"]["services"]["apns"]["sent"] >= 1
    # The server pushed nothing itself: its APNs client never connected (it connects lazily).
    client = server.ctx.services[APNS_CLIENT]
    assert client.stats.sent == 0
    # The child's push metrics are in the server's /metrics.
    text = (await api.get("/metrics")).text
    [line] = [x for x in text.splitlines() if x.startswith('mdm_push_sent_total{service="apns"}')]
    assert float(line.split()[-1]) >= 1
    kinds = [x for x in text.splitlines() if x.startswith("# TYPE ")]
    assert len(kinds) == len(set(kinds))  # the server's own push families gave way to the worker's
    assert "# TYPE mdm_push_owed gauge" in kinds
    # How many worker processes run and have reported (``mdm bench fleet`` waits for them).
    assert reporting_workers(text) == 1


async def test_a_bulk_operation_counts_the_devices_the_worker_woke(
    server: Server, api: httpx.AsyncClient, db: Database, ios: httpx.AsyncClient, fleet: Woken,
) -> None:
    await running_worker(server)
    phones = [await enrolled(server, db, ios, fleet, bytes([i + 1]).hex() * 32) for i in range(4)]
    r = await api.post("/api/v1/commands", json={"type": "Block", "devices": "all"})
    assert r.status_code == 202, r.text
    href = r.json()["href"].removeprefix("/api/v1")

    async def woken() -> bool:
        op = (await api.get(f"/api/v1{href}")).json()
        return bool(op["woken"] == len(phones) and op["completed"] == len(phones))

    await eventually(woken)


async def test_a_killed_worker_is_restarted_and_owed_wake_ups_still_go_out(
    server: Server, api: httpx.AsyncClient, db: Database, ios: httpx.AsyncClient, fleet: Woken,
) -> None:
    supervisor = supervisor_of(server)
    supervisor.min_backoff = 0.2
    first = await running_worker(server)
    phone = await enrolled(server, db, ios, fleet, TOKEN)
    os.kill(first, signal.SIGKILL)

    async def gone() -> bool:
        return supervisor.process is None or supervisor.process.pid == first

    # A command queued while no worker runs: its owed row waits for the next worker.
    await eventually(gone)
    guid = await send_block(api, phone)

    async def restarted() -> bool:
        return supervisor.process is not None and supervisor.process.pid != first and supervisor.starts >= 2

    await eventually(restarted)
    udid, answered = await asyncio.wait_for(fleet.answered.get(), timeout=30)
    assert (udid, answered) == (phone.udid, guid)
    assert not alive(first)


async def test_stopping_the_server_stops_the_worker(config: Config) -> None:
    ctx = await open_context(config)
    server = Server(ctx, PLUGINS)
    await server.start()
    try:
        pid = await running_worker(server)
    finally:
        await server.stop()
    assert not alive(pid)


async def test_a_renewed_certificate_restarts_the_worker_with_it(
    server: Server, apns: Env, tmp_path: Path, api: httpx.AsyncClient, db: Database,
    ios: httpx.AsyncClient, fleet: Woken,
) -> None:
    supervisor = supervisor_of(server)
    first = await running_worker(server)
    renewed = push_certificate(apns.push_ca, apns.identity.topic, days=730)
    _write_identity(tmp_path / "push-id", renewed.cert_pem, renewed.key_pem)
    status = await server.reloader.reload()
    assert status["ok"], status

    async def restarted() -> bool:
        process = supervisor.process
        return process is not None and process.pid != first and supervisor.view.reported()

    await eventually(restarted)
    # Nothing changed: a reload leaves the worker alone.
    await server.reloader.reload()
    assert supervisor.process is not None and supervisor.restart_if_changed() is False
    phone = await enrolled(server, db, ios, fleet, TOKEN)
    guid = await send_block(api, phone)
    assert await asyncio.wait_for(fleet.answered.get(), timeout=10) == (phone.udid, guid)


def test_counts_survive_a_worker_restart() -> None:
    """What an ended worker counted is kept: the next one's counts are added to it."""
    from mdm.push.service_stats import ServiceStats
    from mdm.push.worker_channel import WorkerView

    def snap(sent: int, failed: int) -> dict[str, Any]:
        return {
            "services": {"apns": {"configured": True, "circuit_open": False, "sent": sent,
                                  "failures": {"timeout": failed}, "last_success_at": None}},
            "metrics": [{"name": "mdm_push_sent", "doc": "d", "type": "counter",
                         "samples": [["mdm_push_sent_total", {"service": "apns"}, float(sent)]]}],
        }

    view = WorkerView()
    stats = {"apns": ServiceStats(configured=True), "fcm": ServiceStats(configured=False)}
    view.take(snap(5, 1))
    view.worker_ended()
    view.apply(stats)
    assert (stats["apns"].sent, stats["apns"].failures) == (5, {"timeout": 1})
    view.take(snap(2, 3))
    view.apply(stats)
    assert (stats["apns"].sent, stats["apns"].failures) == (7, {"timeout": 4})
    [family] = list(view.families())
    assert [(s.name, s.value) for s in family.samples] == [("mdm_push_sent_total", 7.0)]


async def test_a_reload_of_the_repush_rate_reaches_the_running_worker_without_a_restart(
    server: Server, config: Config,
) -> None:
    supervisor = supervisor_of(server)
    pid = await running_worker(server)
    starts = supervisor.starts
    assert supervisor.view.current[0]["settings"]["repush_per_second"] == 500
    server.reloader.load = lambda: load(config.data_path, env=CLEAN_ENV)
    path = config.data_path / "mdm.toml"
    path.write_text(path.read_text() + "repush_per_second = 8\n")  # (the file ends in [push])
    status = await server.reloader.reload()
    assert status["ok"] and status["applied"] == ["push.repush_per_second"], status

    async def taken() -> bool:
        return bool(supervisor.view.current.get(0, {}).get("settings", {}).get("repush_per_second") == 8)

    await eventually(taken, timeout=10)
    assert supervisor.process is not None and supervisor.process.pid == pid and supervisor.starts == starts
    assert alive(pid)
