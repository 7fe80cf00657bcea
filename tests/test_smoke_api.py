"""Admin API basics over real HTTPS: auth, scopes, errors, devices and the command queue."""

from __future__ import annotations

import httpx

from mdm.core import tokens
from mdm.db.models import Device, Protocol


async def _device(db, identifier: str = "UDID-1", protocol: Protocol = Protocol.IOS) -> int:
    async with db.transaction() as session:
        d = Device(protocol=protocol.value, identifier=identifier, name="iPad", inventory={}, attributes={})
        session.add(d)
        await session.flush()
        return d.id


async def test_requires_token(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/devices", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await api.get("/api/v1/devices", headers={"Authorization": "Bearer mdm_00000000_wrong"})
    assert r.status_code == 401


async def test_scope_enforced(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["devices:read"])
    r = await api.get("/api/v1/devices", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200
    r = await api.post(
        "/api/v1/commands",
        json={"devices": "all", "type": "Block"},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert r.status_code == 403
    assert "commands:write" in r.json()["error"]["message"]


async def test_queue_and_recall_with_journal(api: httpx.AsyncClient, db) -> None:
    device_id = await _device(db)
    r = await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Block", "args": {}})
    assert r.status_code == 201, r.text
    guid = r.json()["guid"]
    assert r.json()["status"] == "processing"
    # one active command per type
    r = await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Block"})
    assert r.status_code == 409
    r = await api.delete(f"/api/v1/commands/{guid}")
    assert r.status_code == 200
    assert r.json()["status"] == "removed"
    r = await api.get(f"/api/v1/devices/{device_id}/commands")
    journal = [j["status"] for j in r.json()["items"][0]["journal"]]
    assert journal == ["processing", "removed"]
    r = await api.delete(f"/api/v1/commands/{guid}")
    assert r.status_code == 409
    events = (await api.get("/api/v1/events")).json()["items"]
    kinds = [e["type"] for e in events if e["type"] != "admin_action"]  # the audit: tests/test_audit.py
    assert kinds[:2] == ["command_recalled", "command_created"]


async def test_bad_input_is_4xx(api: httpx.AsyncClient, db) -> None:
    device_id = await _device(db)
    r = await api.post(
        f"/api/v1/devices/{device_id}/commands",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = await api.post(
        f"/api/v1/devices/{device_id}/commands", content=b"type=Block", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    r = await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Explode"})
    assert r.status_code == 400
    r = await api.get("/api/v1/devices/999999")
    assert r.status_code == 404
    r = await api.get("/api/v1/devices", params={"limit": 0})
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
    r = await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Mugshot"})
    assert r.status_code == 422
