"""The push plugin in a running server: the dispatcher is the iOS ``Pusher`` when a transport can
be built (an enqueue through the admin API wakes the device), none is registered otherwise, and
the admin API shows the dispatcher's state and the devices whose token was refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from push_dispatch_support import ScriptedTransport, add_device, set_device, wakeups

from mdm.api import plugin as api_plugin
from mdm.api.framework import ApiRouter
from mdm.config import Config
from mdm.core import tokens
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.plugins import ADMIN_API, PLUGINS
from mdm.push import handlers_api as push_api
from mdm.push import plugin as push_plugin
from mdm.push.keys import CERTIFICATE_STATUS, DISPATCHER
from mdm.push.types import PushTransport
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin
from mdm.server.runtime import Server, open_context

Factory = Callable[[ServerContext], Awaitable[PushTransport | None]]


def _plugins(factories: dict[Protocol, Factory]) -> tuple[Plugin, ...]:
    """This build's plugins with the push plugin over these transports and its API routes
    (added unless the composition root already has them)."""
    routes = ADMIN_API
    if not any(op.path == "/api/v1/push/status" for op in ADMIN_API.operations):
        routes = ApiRouter.combine(ADMIN_API, push_api.router)
    others = tuple(api_plugin.plugin(routes) if p.name == "api" else p for p in PLUGINS if p.name != "push")
    return (*others, push_plugin.make_plugin(factories))


@pytest.fixture
def apns() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
async def server(config: Config, apns: ScriptedTransport) -> AsyncIterator[Server]:
    async def apns_factory(ctx: ServerContext) -> PushTransport:
        return apns

    async def fcm_not_configured(ctx: ServerContext) -> None:
        return None

    factories: dict[Protocol, Factory] = {Protocol.IOS: apns_factory, Protocol.KES: fcm_not_configured}
    srv = Server(await open_context(config), _plugins(factories))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_an_enqueue_through_the_api_wakes_the_device(
    server: Server, api: httpx.AsyncClient, db: Database, apns: ScriptedTransport
) -> None:
    assert server.ctx.pushers.get(Protocol.IOS) is server.ctx.services[DISPATCHER]
    # FCM not configured: the KES pusher only answers long polls (mdm/kes/wakeups.py).
    assert getattr(server.ctx.pushers.get(Protocol.KES), "inner", "absent") is None
    dev = await add_device(db, "udid-1", token="00ff")
    r = await api.post(f"/api/v1/devices/{dev}/commands", json={"type": "RefreshDeviceInfo", "args": {}})
    assert r.status_code == 201, r.text
    await asyncio.wait_for(apns.got.wait(), 10)
    assert [(t.device_id, t.token, t.push_magic) for t in apns.sent] == [(dev, "00ff", "magic-udid-1")]
    # The command waits: a re-push is owed in case the device stays silent.
    for _ in range(100):
        rows = await wakeups(db)
        if dev in rows and rows[dev].reason == "repush":
            break
        await asyncio.sleep(0.05)
    assert rows[dev].reason == "repush"


async def test_status_and_invalid_tokens(
    server: Server, api: httpx.AsyncClient, db: Database, apns: ScriptedTransport
) -> None:
    invalid = [await add_device(db, f"bad-{i}", token=f"b{i}", valid=False) for i in range(3)]
    await add_device(db, "never-sent-a-token", token=None, valid=False)
    await set_device(db, invalid[0], protocol=Protocol.KES.value)
    r = await api.get("/api/v1/push/status")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["owed"] == 0 and body["invalid_tokens"] == 3 and body["certificate"] is None
    assert body["services"]["apns"] == {
        "configured": True, "circuit_open": False, "sent": 0, "failures": {}, "last_success_at": None
    }
    assert body["services"]["fcm"]["configured"] is False

    r = await api.get("/api/v1/push/invalid-tokens", params={"limit": 2})
    assert r.status_code == 200, r.text
    page = r.json()
    assert [d["id"] for d in page["items"]] == invalid[:2]
    assert page["items"][0]["protocol"] == "kes" and page["items"][1]["identifier"] == "bad-1"
    r = await api.get("/api/v1/push/invalid-tokens", params={"limit": 2, "cursor": page["next_cursor"]})
    assert [d["id"] for d in r.json()["items"]] == invalid[2:] and r.json()["next_cursor"] is None

    async def certificate() -> dict[str, Any]:
        return {"topic": "com.apple.mgmt.External.x", "expired": True}

    server.ctx.services[CERTIFICATE_STATUS] = certificate
    r = await api.get("/api/v1/push/status")
    assert r.json()["certificate"] == {"topic": "com.apple.mgmt.External.x", "expired": True}


async def test_the_api_asks_for_the_devices_read_scope(server: Server, config: Config, db: Database) -> None:
    async with db.transaction() as session:
        _, token = await tokens.create(session, "commands-only", ["commands:read"])
    async with httpx.AsyncClient(
        base_url=listener_url(server, "admin"), verify=client_ssl_context(config),
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        for path in ("/api/v1/push/status", "/api/v1/push/invalid-tokens"):
            assert (await client.get(path)).status_code == 403
        anonymous = await client.get("/api/v1/push/invalid-tokens", headers={"Authorization": ""})
        assert anonymous.status_code == 401


async def test_a_transport_that_cannot_be_built_registers_no_pusher_and_stop_closes_the_others(
    config: Config, apns: ScriptedTransport
) -> None:
    async def broken(ctx: ServerContext) -> PushTransport:
        raise ValueError("the push certificate has expired")

    async def apns_factory(ctx: ServerContext) -> PushTransport:
        return apns

    srv = Server(await open_context(config), _plugins({Protocol.KES: broken, Protocol.IOS: apns_factory}))
    await srv.start()
    try:
        assert getattr(srv.ctx.pushers.get(Protocol.KES), "inner", "absent") is None  # long polls only
        assert srv.ctx.pushers.get(Protocol.IOS) is not None
        assert srv.ctx.services[DISPATCHER].stats["fcm"].configured is False
    finally:
        await srv.stop()
    assert apns.closed and srv.ctx.pushers.get(Protocol.IOS) is None
