"""The admin API of EAS discovery on a running server with [eas] enabled (its runner over an
in-memory organisation): POST /eas/discovery asks, the worker runs, GET shows the run; mailboxes
in cursor pages; a device's partnerships with the wipe state; the common device list lists them;
refused scopes and unknown ids."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from cli_run import mdm_cli
from eas_support import (
    EAS_CONFIG,
    PRINCIPAL,
    eas_client_fixture,  # noqa: F401  (the client fixture)
    small_org,
)
from sqlalchemy import select

from mdm.config import Config
from mdm.core import tokens
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.devfakes.exchange_org import Organisation, SessionState


@pytest.fixture
def extra_config() -> str:
    return EAS_CONFIG


@pytest.fixture
def exchange() -> Organisation:
    return small_org()


async def _run(client: httpx.AsyncClient) -> dict[str, object]:
    r = await client.post("/api/v1/eas/discovery")
    assert r.status_code == 202, r.text
    for _ in range(200):
        state = (await client.get("/api/v1/eas/discovery")).json()
        if state["finished_at"] and state["requested_at"] is None and not state["running"]:
            return dict(state)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no discovery finished: {state}")


async def test_discovery_on_demand_and_its_results(
    client: httpx.AsyncClient, exchange: Organisation, db: Database
) -> None:
    state = await _run(client)
    assert state["outcome"] == "ok" and state["devices"] == 4 and state["mailboxes"] == 4
    listed = (await client.get("/api/v1/devices", params={"protocol": "eas"})).json()
    identifiers = sorted(d["identifier"] for d in listed["items"])
    assert identifiers == ["ApplALICE0001", "ApplSHARED003", "androidalice02"]
    page = (await client.get("/api/v1/eas/mailboxes", params={"limit": 3})).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = (
        await client.get("/api/v1/eas/mailboxes", params={"limit": 3, "cursor": page["next_cursor"]})
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    found = (await client.get("/api/v1/eas/mailboxes", params={"q": "ALICE"})).json()["items"]
    assert [m["name"] for m in found] == ["alice"]
    detail = (await client.get(f"/api/v1/eas/mailboxes/{found[0]['id']}")).json()
    assert len(detail["partnerships"]) == 2
    # Wipe through Exchange, then discovery shows it pending, honestly.
    iphone = next(d for d in listed["items"] if d["identifier"] == "ApplALICE0001")
    part = next(p for p in detail["partnerships"] if p["device_id"] == iphone["id"])
    exchange.execute(
        "Clear-ActiveSyncDevice",
        {"Identity": part["exchange_identity"], "Confirm": False},
        principal=PRINCIPAL,
        session=SessionState(),
    )
    await _run(client)
    dev = (await client.get(f"/api/v1/eas/devices/{iphone['id']}")).json()
    wipe = dev["partnerships"][0]["wipe"]
    assert wipe["state"] == "pending" and wipe["requested_at"] and wipe["acknowledged_at"] is None
    assert "until it is removed" in wipe["note"]
    exchange.device_syncs("ApplALICE0001")
    await _run(client)
    dev = (await client.get(f"/api/v1/eas/devices/{iphone['id']}")).json()
    assert dev["status"] == "wiped" and dev["partnerships"][0]["wipe"]["state"] == "acknowledged"
    assert dev["partnerships"][0]["wipe"]["acknowledged_at"]
    # The request was audited.
    async with db.session() as session:
        audits = [e.body for e in await session.scalars(select(Event).where(Event.type == "admin_action"))]
    assert any("/eas/discovery" in str(a) for a in audits), audits


async def test_unknown_ids_and_bad_queries(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/eas/mailboxes/999999")).status_code == 404
    assert (await client.get("/api/v1/eas/devices/999999")).status_code == 404
    assert (await client.get("/api/v1/eas/devices/abc")).status_code in (400, 404, 422)
    assert (await client.get("/api/v1/eas/mailboxes", params={"limit": 0})).status_code == 400
    assert (await client.get("/api/v1/eas/mailboxes", params={"cursor": "1; DROP"})).status_code == 400


async def test_scopes(client: httpx.AsyncClient, db: Database) -> None:
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["devices:read"])
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await client.get("/api/v1/eas/discovery", headers=headers)).status_code == 200
    assert (await client.post("/api/v1/eas/discovery", headers=headers)).status_code == 403
    anon = {"Authorization": "Bearer nope"}
    assert (await client.post("/api/v1/eas/discovery", headers=anon)).status_code == 401
    async with db.session() as session:
        assert (await session.scalar(select(Event.id).where(Event.type == "eas_discovery_completed"))) is None


async def test_cli_discover_wait_mailboxes_device(
    client: httpx.AsyncClient, config: Config, admin_token: str
) -> None:
    env = {"MDM_API_TOKEN": admin_token}
    url = str(client.base_url)
    code, out, err = await mdm_cli(
        config, "eas", "discover", "--wait", "--timeout", "60", "--url", url, env_extra=env
    )
    assert code == 0, (out, err)
    assert "ok" in out and "devices" in out
    code, out, err = await mdm_cli(config, "eas", "discovery", "--json", "--url", url, env_extra=env)
    assert code == 0 and json.loads(out)["devices"] == 4, (out, err)
    code, out, err = await mdm_cli(
        config, "eas", "mailboxes", "--query", "alice", "--url", url, env_extra=env
    )
    assert code == 0 and "alice@corp.example.com" in out and "bob" not in out, (out, err)
    devices = (await client.get("/api/v1/devices", params={"protocol": "eas"})).json()["items"]
    shared = next(d for d in devices if d["identifier"] == "ApplSHARED003")
    code, out, err = await mdm_cli(config, "eas", "device", str(shared["id"]), "--url", url, env_extra=env)
    assert code == 0 and out.count("ExchangeActiveSyncDevices") == 2, (out, err)
    code, out, err = await mdm_cli(config, "eas", "device", "0", "--url", url, env_extra=env)
    assert code == 2 and "positive integer" in err
    code, out, err = await mdm_cli(config, "eas", "device", "999999", "--url", url, env_extra=env)
    assert code != 0 and "999999" in err, (out, err)
