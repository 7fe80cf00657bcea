"""EAS commands on the full server path with [eas] enabled: discovery (``mdm.eas.plugin``) fills
the device list from the organisation, commands sent through the admin API run through the
plugin's runner, and the next discovery shows what the commands did."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from eas_commands_support import wait_command
from eas_support import (
    EAS_CONFIG,
    eas_client_fixture,  # noqa: F401  (the client fixture)
    small_org,
)
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.tables import EasPartnership


@pytest.fixture
def extra_config() -> str:
    return EAS_CONFIG + "command_poll_seconds = 0.2\n"


@pytest.fixture
def exchange() -> Organisation:
    return small_org()


async def _discover(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/eas/discovery")).status_code == 202
    for _ in range(200):
        state = (await client.get("/api/v1/eas/discovery")).json()
        if state["finished_at"] and state["requested_at"] is None and not state["running"]:
            assert state["outcome"] == "ok", state
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no discovery finished")


async def _device(client: httpx.AsyncClient, identifier: str) -> dict[str, object]:
    listed = (await client.get("/api/v1/devices", params={"protocol": "eas"})).json()["items"]
    return dict(next(d for d in listed if d["identifier"] == identifier))


async def _wipe_states(db: Database, device_id: int) -> set[str]:
    async with db.session() as session:
        stmt = select(EasPartnership.wipe_state).where(EasPartnership.device_id == device_id)
        rows = await session.scalars(stmt)
        return set(rows.all())


async def test_wipe_after_discovery_and_the_next_discovery_shows_it_acknowledged(
    client: httpx.AsyncClient, exchange: Organisation, db: Database
) -> None:
    await _discover(client)
    device = await _device(client, "ApplSHARED003")  # an iPad syncing two mailboxes
    device_id = int(str(device["id"]))
    r = await client.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Wipe"})
    assert r.status_code in (200, 201), r.text
    command = await wait_command(client, device_id, r.json()["guid"])
    assert command["status"] == "completed", command
    assert "on 2 partnership(s)" in command["result_info"]
    assert sum(1 for c in exchange.calls if c.name == "Clear-MobileDevice") == 2
    assert await _wipe_states(db, device_id) == {"pending"}
    # Discovery before the device synced keeps it pending; after, acknowledged and wiped.
    await _discover(client)
    assert await _wipe_states(db, device_id) == {"pending"}
    exchange.device_syncs("ApplSHARED003")
    await _discover(client)
    assert await _wipe_states(db, device_id) == {"acknowledged"}
    assert (await _device(client, "ApplSHARED003"))["status"] == "wiped"


async def test_disable_activesync_after_discovery(client: httpx.AsyncClient, exchange: Organisation) -> None:
    await _discover(client)
    device_id = int(str((await _device(client, "androidalice02"))["id"]))
    r = await client.post(f"/api/v1/devices/{device_id}/commands", json={"type": "DisableActiveSync"})
    assert r.status_code in (200, 201), r.text
    command = await wait_command(client, device_id, r.json()["guid"])
    assert command["status"] == "completed", command
    assert exchange.mailbox("alice").activesync_enabled is False  # type: ignore[union-attr]
    r = await client.post(f"/api/v1/devices/{device_id}/commands",
                          json={"type": "AssignEasPolicy", "args": {"policy": "Strict"}})
    assert r.status_code in (200, 201), r.text
    command = await wait_command(client, device_id, r.json()["guid"])
    assert command["status"] == "completed", command
    assert exchange.mailbox("alice").policy == "Strict"  # type: ignore[union-attr]
