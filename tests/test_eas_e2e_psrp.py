"""EAS end to end with nothing replaced: ``mdm serve``'s plugins build the production
``ExchangeRunner`` from ``[eas]``, which logs in to a real MIT KDC with its keytab and speaks
WSMan/PSRP (pypsrp) over HTTPS to the contract fake. Through the admin API: discovery, Wipe (and
its acknowledgement), Remove, ActiveSync off and on, a policy assignment, and policy management
with a hostile name, all of it seen arriving at the fake organisation as plain values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from eas_commands_support import events_of, make_runner, seed_from_org, wait_command
from eas_support import api_client, small_org

from mdm.config import Config
from mdm.db.engine import Database
from mdm.devfakes.exchange_org import Organisation
from mdm.devfakes.exchange_psrp import ExchangePsrpFake
from mdm.eas.cmdlets import REQUIRED_CMDLETS
from mdm.server.runtime import Server, open_context
from tests.eas_psrp_support import EasWorld, eas_world_fixture  # noqa: F401
from tests.kdc import kdc_fixture, krb5_ccache_fixture  # noqa: F401

pytestmark = pytest.mark.slow

HOSTILE = "Sales'; Remove-Mailbox -Identity * -Confirm:$false #$(whoami)"


@pytest.fixture
def exchange(eas_world: EasWorld) -> Organisation:
    org = small_org()
    org.permissions = {eas_world.kdc.svc_principal: set(REQUIRED_CMDLETS)}
    return org


@pytest.fixture
def fake(eas_world: EasWorld, exchange: Organisation) -> ExchangePsrpFake:
    return eas_world.fake(exchange)


@pytest.fixture
def extra_config(eas_world: EasWorld, fake: ExchangePsrpFake) -> str:
    cfg = eas_world.config(fake)
    return (
        "[eas]\nenabled = true\n"
        f'servers = ["{cfg.servers[0]}"]\ntransport = "https"\nca_file = "{cfg.ca_file}"\n'
        f'principal = "{cfg.principal}"\nkeytab_file = "{cfg.keytab_file}"\n'
        "concurrency = 2\nretries = 2\nbackoff_initial_seconds = 0.05\nbackoff_max_seconds = 0.2\n"
        "discovery_batch = 2\ncommand_poll_seconds = 0.2\n"
    )


@pytest.fixture
async def client(
    config: Config, admin_token: str, fake: ExchangePsrpFake
) -> AsyncIterator[httpx.AsyncClient]:
    ctx = await open_context(config)
    from mdm.plugins import PLUGINS

    srv = Server(ctx, PLUGINS)
    await srv.start()
    try:
        async with await api_client(srv, config, admin_token) as c:
            yield c
    finally:
        await srv.stop()


async def _discover(client: httpx.AsyncClient) -> dict[str, Any]:
    assert (await client.post("/api/v1/eas/discovery")).status_code == 202
    for _ in range(600):
        state: dict[str, Any] = (await client.get("/api/v1/eas/discovery")).json()
        if state["finished_at"] and state["requested_at"] is None and not state["running"]:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError("no discovery finished")


async def _devices(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    listed = (await client.get("/api/v1/devices", params={"protocol": "eas"})).json()["items"]
    return {d["identifier"]: d for d in listed}


async def _identity(client: httpx.AsyncClient, device_id: int) -> str:
    """The Exchange identity of the device's (only) partnership."""
    view = (await client.get(f"/api/v1/eas/devices/{device_id}")).json()
    (partnership,) = view["partnerships"]
    return str(partnership["exchange_identity"])


async def _run(client: httpx.AsyncClient, device_id: int, type_: str, **args: Any) -> dict[str, Any]:
    r = await client.post(f"/api/v1/devices/{device_id}/commands", json={"type": type_, "args": args})
    assert r.status_code in (200, 201), r.text
    return await wait_command(client, device_id, r.json()["guid"], timeout=60)


async def test_discovery_commands_and_policies_through_psrp(
    client: httpx.AsyncClient, exchange: Organisation, fake: ExchangePsrpFake
) -> None:
    state = await _discover(client)
    assert state["outcome"] == "ok", state
    devices = await _devices(client)
    assert set(devices) == {"ApplALICE0001", "androidalice02", "ApplSHARED003"}
    assert fake.pipelines_run > 0  # the production runner went over the wire

    # Wipe: requested, pending until the phone syncs, then acknowledged, and still listed.
    ipad = int(devices["ApplSHARED003"]["id"])
    command = await _run(client, ipad, "Wipe")
    assert command["status"] == "completed", command
    assert "until it is removed" in command["result_info"]
    view = (await client.get(f"/api/v1/eas/devices/{ipad}")).json()
    assert {p["wipe"]["state"] for p in view["partnerships"]} == {"pending"}
    exchange.device_syncs("ApplSHARED003")
    assert (await _run(client, ipad, "RefreshDeviceInfo"))["status"] == "completed"
    view = (await client.get(f"/api/v1/eas/devices/{ipad}")).json()
    assert {p["wipe"]["state"] for p in view["partnerships"]} == {"acknowledged"}
    assert all(p["wipe"]["acknowledged_at"] for p in view["partnerships"])
    assert (await _devices(client))["ApplSHARED003"]["status"] == "wiped"

    # Remove: the partnership leaves Exchange.
    android = int(devices["androidalice02"]["id"])
    identity = await _identity(client, android)
    assert exchange.device(identity) is not None
    assert (await _run(client, android, "Remove"))["status"] == "completed"
    assert exchange.device(identity) is None

    # ActiveSync off and on, and a policy assignment, on alice's mailbox.
    iphone = int(devices["ApplALICE0001"]["id"])
    assert (await _run(client, iphone, "DisableActiveSync"))["status"] == "completed"
    assert exchange.mailbox("alice").activesync_enabled is False  # type: ignore[union-attr]
    assert (await _run(client, iphone, "EnableActiveSync"))["status"] == "completed"
    assert exchange.mailbox("alice").activesync_enabled is True  # type: ignore[union-attr]

    # Policies: created with a hostile name, edited, assigned, deleted.
    r = await client.post("/api/v1/eas/policies", json={
        "name": HOSTILE, "settings": {"password_required": True, "min_password_length": 6,
                                      "inactivity_lock_seconds": 900, "camera_allowed": False}})
    assert r.status_code == 201, r.text
    assert exchange.policy(HOSTILE) is not None
    r = await client.patch(f"/api/v1/eas/policies/{quote(HOSTILE, safe='')}",
                           json={"settings": {"min_password_length": 8}})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["min_password_length"] == 8
    assign = await _run(client, iphone, "AssignEasPolicy", policy=HOSTILE)
    assert assign["status"] == "completed", assign
    assert exchange.mailbox("alice").policy == HOSTILE  # type: ignore[union-attr]
    assert (await _run(client, iphone, "AssignEasPolicy", policy="Default"))["status"] == "completed"
    r = await client.delete(f"/api/v1/eas/policies/{quote(HOSTILE, safe='')}")
    assert r.status_code in (200, 204), r.text
    assert exchange.policy(HOSTILE) is None

    # Every value crossed PSRP as a plain parameter value, never as script.
    names = [c.params.get("Name") or c.params.get("Identity") or c.params.get("ActiveSyncMailboxPolicy")
             for c in exchange.calls]
    assert HOSTILE in names
    destructive = [c for c in exchange.calls if c.name in ("Clear-MobileDevice", "Remove-MobileDevice",
                                                           "Remove-MobileDeviceMailboxPolicy")]
    assert destructive and all(c.params.get("Confirm") is False for c in destructive)


async def test_a_device_removed_in_exchange_after_discovery_fails_the_wipe_clearly(
    client: httpx.AsyncClient, exchange: Organisation
) -> None:
    await _discover(client)
    device_id = int((await _devices(client))["androidalice02"]["id"])
    assert exchange.drop_device(await _identity(client, device_id))
    command = await _run(client, device_id, "Wipe")
    assert command["status"] == "failed", command
    assert "no longer exists in Exchange" in command["result_info"]


@pytest.fixture
def kdc_down(eas_world: EasWorld) -> None:
    """The KDC is down before the server starts: the runner has no ticket yet."""
    eas_world.kdc.stop_kdc()


async def test_a_kdc_that_is_down_fails_discovery_clearly_and_loses_nothing(
    kdc_down: None, eas_world: EasWorld, client: httpx.AsyncClient, exchange: Organisation
) -> None:
    state = await _discover(client)
    assert state["outcome"] == "failed", state
    assert "Kerberos" in state["error"] and eas_world.kdc.svc_principal in state["error"], state
    light = next(a for a in (await client.get("/api/v1/status")).json()["areas"] if a["area"] == "eas")
    assert light["light"] == "red", light
    assert await _devices(client) == {}
    assert not exchange.calls  # nothing reached Exchange without a ticket
    eas_world.kdc.start_kdc()
    state = await _discover(client)
    assert state["outcome"] == "ok", state
    assert set(await _devices(client)) == {"ApplALICE0001", "androidalice02", "ApplSHARED003"}


async def test_a_wipe_sent_while_the_kdc_is_down_waits_and_runs_when_it_is_back(
    kdc_down: None, eas_world: EasWorld, client: httpx.AsyncClient, exchange: Organisation, db: Database
) -> None:
    """The production runner cannot get a ticket: the Wipe stays queued (deferred, the Kerberos
    reason in the command log and an event), nothing reaches Exchange, nothing is lost; with the
    KDC back the same command runs once."""
    ids = await seed_from_org(db, make_runner(exchange, principal=eas_world.kdc.svc_principal))
    exchange.calls.clear()
    device_id = ids["ApplALICE0001"]
    r = await client.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Wipe", "args": {}})
    assert r.status_code in (200, 201), r.text
    guid = r.json()["guid"]
    deferred: list[dict[str, Any]] = []
    for _ in range(600):
        deferred = [e for e in await events_of(db, "eas_command_deferred") if e["command"] == guid]
        if deferred:
            break
        await asyncio.sleep(0.05)
    assert deferred and deferred[0]["reason"] == "auth_failed", deferred
    assert eas_world.kdc.svc_principal in deferred[0]["message"]
    page = (await client.get(f"/api/v1/devices/{device_id}/commands")).json()
    command = next(c for c in page["items"] if c["guid"] == guid)
    assert command["status"] == "processing", command
    details = [j["detail"] or "" for j in command["journal"] or []]
    assert any("Kerberos authentication failed" in d and "retrying at" in d for d in details), details
    assert not exchange.calls  # nothing reached Exchange without a ticket
    eas_world.kdc.start_kdc()
    done = await wait_command(client, device_id, guid, timeout=60)
    assert done["status"] == "completed" and "until it is removed" in done["result_info"], done
    assert [c.name for c in exchange.calls].count("Clear-MobileDevice") == 1
    identity = next(c.params["Identity"] for c in exchange.calls if c.name == "Clear-MobileDevice")
    assert exchange.device(identity).wipe_requested is not None  # type: ignore[union-attr]
