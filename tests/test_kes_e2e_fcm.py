"""End to end with FCM wake-ups: the server's FCM client talks to the FCM contract fake (OAuth2
and messages:send over real sockets), the fake hands each accepted message to the agent whose
token it names, and that agent syncs only when woken. A bulk command to a group of KES devices
(``POST /api/v1/commands``) reaches every agent that way; install_apk downloads the APK and checks
its SHA-256 (a mismatch fails the command)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from conftest import client_ssl_context
from fcm_support import write_account
from test_kes_e2e import command_status, enrolled_agent, send

from mdm.config import Config
from mdm.devfakes.fcm import FcmFake
from mdm.pki.slots import slot_paths
from mdm.push.fcm.oauth import ServiceAccount
from mdm.server.runtime import Server
from mdm.sim.kes.agent import KesAgent


@dataclass
class Fcm:
    fake: FcmFake
    toml: str
    agents: dict[str, KesAgent] = field(default_factory=dict)

    def deliver(self, token: str, data: dict[str, str]) -> None:
        agent = self.agents.get(token)
        if agent is not None:
            agent.woken(token, data)


@pytest.fixture
async def fcm(tmp_path: Path) -> AsyncIterator[Fcm]:
    holder: dict[str, Fcm] = {}
    fake = FcmFake(on_message=lambda token, data: holder["fcm"].deliver(token, data))
    urls = await fake.start()
    account_file = write_account(tmp_path / "fcm-sa.json", urls.token_url)
    fake.add_service_account(ServiceAccount.load(account_file))
    toml = (f'[fcm]\nservice_account_file = "{account_file}"\nbase_url = "{urls.base_url}"\n'
            f'token_url = "{urls.token_url}"\n')
    holder["fcm"] = Fcm(fake, toml)
    try:
        yield holder["fcm"]
    finally:
        await fake.stop()


@pytest.fixture
def extra_config(fcm: Fcm) -> str:
    return "[kes]\nmin_sync_spacing_seconds = 0\n" + fcm.toml


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_bulk_command_to_a_group_wakes_every_agent_through_fcm(
        api: httpx.AsyncClient, server: Server, config: Config, fcm: Fcm) -> None:
    agents = [await enrolled_agent(api, server, config, seed=10 + i) for i in range(3)]
    group = (await api.post("/api/v1/groups", json={"name": "kes bulk"})).json()
    for agent in agents:
        assert agent.device_id is not None
        moved = await api.put(f"/api/v1/devices/{agent.device_id}/group", json={"group_id": group["id"]})
        assert moved.status_code in (200, 204), moved.text
        await agent.settle()  # the first report (inventory); nothing pending after it
        fcm.agents[agent.state.facts.fcm_token] = agent
    stop = asyncio.Event()
    runs = [asyncio.ensure_future(a.run(stop, mode="fcm")) for a in agents]
    syncs_before = [a.syncs for a in agents]
    try:
        await asyncio.sleep(0.2)
        assert [a.syncs for a in agents] == syncs_before, "an agent in FCM mode waits to be woken"
        bulk = await api.post("/api/v1/commands", json={"devices": {"group": group["id"]}, "type": "Block"})
        assert bulk.status_code == 202, bulk.text
        await _until(lambda: all(a.state.locked for a in agents))
        assert all(a.wakeups >= 1 for a in agents)
        woken = {m.token for m in fcm.fake.accepted}
        assert {a.state.facts.fcm_token for a in agents} <= woken
        op = bulk.json()["id"]

        async def all_done() -> bool:
            body = (await api.get(f"/api/v1/bulk/{op}")).json()
            return bool(body.get("completed") == len(agents))

        deadline = time.monotonic() + 20
        while not await all_done():
            assert time.monotonic() < deadline, (await api.get(f"/api/v1/bulk/{op}")).json()
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*runs)
        for agent in agents:
            await agent.close()


@pytest.fixture
async def apk_server(config: Config) -> AsyncIterator[tuple[str, bytes]]:
    """An HTTPS server (certificate of the test CA) serving one APK."""
    apk = b"PK\x03\x04" + random.Random(7).randbytes(4096)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=apk, content_type="application/vnd.android.package-archive")

    app = web.Application()
    app.router.add_get("/app.apk", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    cert, key = slot_paths(config.certs_dir, "web")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/app.apk", apk
    finally:
        await runner.cleanup()


async def test_install_apk_checks_the_sha256(api: httpx.AsyncClient, server: Server, config: Config,
                                             apk_server: tuple[str, bytes]) -> None:
    url, apk = apk_server
    agent = await enrolled_agent(api, server, config, seed=21)
    agent.download_verify = client_ssl_context(config)
    assert agent.device_id is not None
    await agent.settle()
    good = await send(api, agent.device_id, "InstallApplication", url=url,
                      sha256=hashlib.sha256(apk).hexdigest(), package="com.example.app")
    await agent.settle()
    assert (await command_status(api, good))["status"] == "completed"
    bad = await send(api, agent.device_id, "InstallApplication", url=url, sha256="0" * 64,
                     package="com.example.other")
    await agent.settle()
    failed = await command_status(api, bad)
    assert failed["status"] == "failed", failed
    assert "sha256_mismatch" in str(failed)
    packages = {a.package for a in agent.state.facts.apps}
    assert "com.example.app" in packages and "com.example.other" not in packages
    assert agent.state.downloads == [url, url]
    await agent.close()
