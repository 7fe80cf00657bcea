"""The discovery worker and the "eas" light: one replica discovers at a time (leader lock), a
request is picked up at once, a run is not repeated before its interval, a failing runner does
not stop the worker; the light's colours."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import eas_support
import pytest
from eas_support import discover, make_runner

from mdm.core.status import Light
from mdm.db.engine import Database
from mdm.db.leader_lock import leader_lock
from mdm.db.models import utcnow
from mdm.devfakes.exchange_org import Organisation
from mdm.eas import store
from mdm.eas.config import EasConfig
from mdm.eas.seams import CmdletRunner, ServerHealth
from mdm.eas.status import DISABLED, EasSource
from mdm.eas.tables import EasDiscovery
from mdm.eas.worker_discovery import DISCOVERY_LOCK_FILE, DISCOVERY_LOCK_KEY, DiscoveryWorker

org = eas_support.org
runner = eas_support.runner
ON = EasConfig(
    enabled=True,
    servers=["cas01.corp.example.com", "cas02.corp.example.com"],
    mode="cluster",
    principal="svc@CORP.EXAMPLE.COM",
    password_file="pw",
    discovery_interval_seconds=60,
)


def _worker(db: Database, r: CmdletRunner | None, path: Path, name: str) -> DiscoveryWorker:
    lock = leader_lock(db, path, key=DISCOVERY_LOCK_KEY, lock_file=DISCOVERY_LOCK_FILE)
    return DiscoveryWorker(db, lambda: r, lambda: ON, lock, poll_seconds=0.05, name=name)


async def test_one_leader_runs_and_a_request_is_picked_up(
    db: Database, runner: CmdletRunner, tmp_path: Path
) -> None:
    first, second = _worker(db, runner, tmp_path, "a"), _worker(db, runner, tmp_path, "b")
    try:
        assert (await first.run_once()) is not None  # never ran: due
        assert (await second.run_once()) is None  # not the leader
        assert (await first.run_once()) is None  # ran just now: not due before the interval
        state = await second.request(by="admin")  # any replica may ask
        assert state is not None and state.requested_at is not None
        result = await first.run_once()
        assert result is not None and result.outcome == "ok"
        row = await first.state()
        assert row is not None and row.requested_at is None and row.runner == "a"
    finally:
        await first.release()
        await second.release()
    # The lock is free again: the other replica takes over.
    assert await second.lock.acquire()
    await second.release()


async def test_a_run_is_due_again_once_its_interval_has_passed(
    db: Database, runner: CmdletRunner, tmp_path: Path
) -> None:
    """Periodic polling: nothing before ``discovery_interval_seconds`` (60 s here) since the last
    start, a run as soon as it has passed."""
    worker = _worker(db, runner, tmp_path, "a")
    try:
        assert (await worker.run_once()) is not None
        first = await worker.state()
        assert first is not None and first.started_at is not None
        assert (await worker.run_once()) is None

        async def started(seconds_ago: float) -> None:
            async with db.transaction() as session:
                row = await session.get(EasDiscovery, first.id)
                assert row is not None
                row.started_at = utcnow() - timedelta(seconds=seconds_ago)

        await started(50)
        assert (await worker.run_once()) is None  # 50 s < 60 s
        await started(61)
        result = await worker.run_once()
        assert result is not None and result.outcome == "ok"
        row = await worker.state()
        assert row is not None and row.started_at is not None
        assert utcnow() - row.started_at < timedelta(seconds=30)  # a new run started
        assert worker.runs == 2
    finally:
        await worker.release()


async def test_worker_survives_a_failing_exchange(db: Database, org: Organisation, tmp_path: Path) -> None:
    r = make_runner(org)
    await r.close()  # unavailable
    worker = _worker(db, r, tmp_path, "a")
    task = asyncio.create_task(worker.run_forever())
    try:
        for _ in range(100):
            row = await worker.state()
            if row is not None and row.outcome == "failed":
                break
            await asyncio.sleep(0.05)
        assert row is not None and row.outcome == "failed"
        await worker.request(by="admin")
        await asyncio.sleep(0.3)
        assert not task.done()
        assert worker.runs >= 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.release()


class _Health:
    """A runner's health as the status source reads it (``health()`` only)."""

    def __init__(self, *servers: ServerHealth) -> None:
        self.servers = servers

    def health(self) -> list[ServerHealth]:
        return list(self.servers)


def _server(name: str, ok: bool) -> ServerHealth:
    now = utcnow()
    return ServerHealth(
        name=name,
        url=f"https://{name}/PowerShell",
        connected=ok,
        last_ok_at=now if ok else None,
        last_error=None if ok else "connection refused",
        last_error_reason=None if ok else "unavailable",
        last_error_at=None if ok else now,
    )


async def test_the_light(db: Database, runner: CmdletRunner) -> None:
    up, down = _server("cas01", True), _server("cas02", False)

    async def light(cfg: EasConfig, health: object) -> tuple[Light, str | None]:
        source = EasSource(lambda: cfg, lambda: health)  # type: ignore[arg-type,return-value]
        async with db.session() as session:
            status = await source.status(session)
        return status.light, status.reason

    assert await light(EasConfig(), None) == (Light.GREY, DISABLED)
    assert (await light(ON, _Health(up, up)))[0] is Light.YELLOW  # nothing discovered yet
    assert (await discover(db, runner)).outcome == "ok"
    assert (await light(ON, _Health(up, up)))[0] is Light.GREEN
    color, reason = await light(ON, _Health(up, down))
    assert color is Light.YELLOW and "cas02" in (reason or "")
    color, reason = await light(ON, _Health(down, down))
    assert color is Light.RED and "connection refused" in (reason or "")
    async with db.transaction() as session:
        await store.finish(session, outcome="ok", error=None, now=utcnow() - timedelta(seconds=181))
    color, reason = await light(ON, _Health(up, up))
    assert color is Light.YELLOW and "intervals" in (reason or "")
    async with db.transaction() as session:
        await store.finish(session, outcome="failed", error="KDC unreachable", now=utcnow())
    color, reason = await light(ON, _Health(up, up))
    assert color is Light.RED and "KDC unreachable" in (reason or "")


def test_eas_on_without_its_libraries_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The "eas" extra is optional: a server with [eas] on but without pypsrp says what to install."""
    import sys

    from mdm.config import ConfigError
    from mdm.eas.config import EasConfig
    from mdm.eas.plugin import exchange_runner

    for name in [m for m in sys.modules if m == "mdm.eas.runner" or m.startswith("mdm.eas.runner_")]:
        monkeypatch.delitem(sys.modules, name)
    # every cached pypsrp module too: "from pypsrp.x import y" finds a cached submodule without its parent
    for name in [m for m in sys.modules if m == "pypsrp" or m.startswith("pypsrp.")] + ["pypsrp"]:
        monkeypatch.setitem(sys.modules, name, None)  # import pypsrp[.x] -> ImportError
    config = EasConfig(enabled=True, servers=["cas1.corp.example.com"], principal="svc@CORP.EXAMPLE.COM",
                       password_file=str(tmp_path / "pw"))
    with pytest.raises(ConfigError, match=r"pip install 'mdm\[eas\]'"):
        exchange_runner(config, tmp_path)
