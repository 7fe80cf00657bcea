"""Shared fixtures of the EAS tests: a small Exchange organisation, a ``runner`` over it, the
[eas] configuration that switches EAS on, and a server whose EAS plugin uses that runner.

``runner`` is ``mdm.devfakes.exchange_local.LocalOrgRunner`` (in-process, no wire) today; the
end-to-end path (``mdm.eas.runner.ExchangeRunner`` -> WSMan/PSRP fake -> real KDC) is swapped in
here at integration without touching the tests that use the fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.devfakes.exchange_local import LocalOrgRunner
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.cmdlets import Naming
from mdm.eas.config import EasConfig
from mdm.eas.keys import RUNNER_FACTORY
from mdm.eas.seams import CmdletRunner
from mdm.eas.service_discovery import Discovery, RunResult
from mdm.server.runtime import Server, open_context

PRINCIPAL = "svc-mdm@CORP.EXAMPLE.COM"
SERVER = "cas01.corp.example.com"
# [eas] switched on (the runner is replaced by the fixture's; the password file is never read).
EAS_CONFIG = f"""
[eas]
enabled = true
servers = ["{SERVER}"]
principal = "{PRINCIPAL}"
password_file = "eas.password"
discovery_interval_seconds = 3600
discovery_batch = 3
concurrency = 2
"""
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def small_org(naming: Naming = Naming.EXCHANGE_2013) -> Organisation:
    """alice: an iPhone and an Android phone; bob: an iPad that also syncs carol's mailbox;
    carol: that iPad; dave: no device, ActiveSync off. Policies: Default, Strict."""
    org = Organisation(naming=naming)
    org.add_policy("Strict", {"DevicePasswordEnabled": True, "MinDevicePasswordLength": 6})
    for name in ("alice", "bob", "carol"):
        org.add_mailbox(name, display_name=name.title())
    org.add_mailbox("dave", activesync_enabled=False)
    org.add_device("alice", "ApplALICE0001", model="iPhone15,2", os="iOS 17.1 21B74", last_sync=T0)
    org.add_device(
        "alice",
        "androidalice02",
        device_type="Android",
        model="Pixel 8",
        os="Android 14",
        user_agent="Android-Mail/2023.11.05",
        last_sync=T0,
    )
    org.add_device(
        "bob", "ApplSHARED003", device_type="iPad", model="iPad13,4", os="iOS 17.0 21A329", last_sync=T0
    )
    org.add_device(
        "carol", "ApplSHARED003", device_type="iPad", model="iPad13,4", os="iOS 17.0 21A329", last_sync=T0
    )
    return org


def make_runner(org: Organisation) -> CmdletRunner:
    return LocalOrgRunner(org, principal=PRINCIPAL)


@pytest.fixture
def org() -> Organisation:
    return small_org()


@pytest.fixture
async def runner(org: Organisation) -> AsyncIterator[CmdletRunner]:
    r = make_runner(org)
    yield r
    await r.close()


async def discover(db: Database, runner: CmdletRunner, **kwargs: Any) -> RunResult:
    kwargs.setdefault("batch", 2)
    kwargs.setdefault("concurrency", 2)
    return await Discovery(db, runner, **kwargs).run(runner_name="test")


async def event_bodies(db: Database, type_name: str) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = await session.scalars(select(Event).where(Event.type == type_name).order_by(Event.id))
        return [dict(e.body, _device_id=e.device_id) for e in rows]


async def event_count(db: Database, type_name: str) -> int:
    async with db.session() as session:
        return int(
            await session.scalar(select(func.count()).select_from(Event).where(Event.type == type_name)) or 0
        )


async def eas_server(config: Config, org: Organisation) -> Server:
    """A started server with [eas] enabled whose runner runs over ``org`` (stop it yourself)."""
    assert config.section(EasConfig).enabled, "use EAS_CONFIG as extra_config"
    ctx = await open_context(config)
    ctx.services[RUNNER_FACTORY] = lambda _cfg, _dir: make_runner(org)
    from mdm.plugins import PLUGINS

    srv = Server(ctx, PLUGINS)
    await srv.start()
    return srv


async def api_client(srv: Server, config: Config, token: str) -> httpx.AsyncClient:
    from conftest import client_ssl_context, listener_url

    return httpx.AsyncClient(
        base_url=listener_url(srv, "admin"),
        verify=client_ssl_context(config),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.fixture(name="client")
async def eas_client_fixture(
    config: Config, exchange: Organisation, admin_token: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An admin API client of a started server with [eas] on over the test's ``exchange``
    organisation (the test module defines ``exchange`` and ``extra_config``)."""
    srv = await eas_server(config, exchange)
    try:
        async with await api_client(srv, config, admin_token) as c:
            yield c
    finally:
        await srv.stop()
