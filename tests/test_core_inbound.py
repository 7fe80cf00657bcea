"""The core server drives this service through the admin API with a ``core`` token (issue 14
item 4), end to end against the real server: the token is made with ``mdm tokens create --scope
core``; it enrolls (iOS and Android), sends a command to a device and a bulk command, reads the
command log, recalls a command, removes a device (whose identity the kes listener then refuses),
reads /status and /events; and it is refused, with the scope it lacks named, for token
management, PKI, policies, users and groups and the dead-letter replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest
from conftest import client_ssl_context, listener_url

from mdm.config import Config
from mdm.db.engine import Database
from mdm.server.runtime import Server
from tests.enroll_support import APNS_TOML
from tests.kes_support import enroll_device, kes_client


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML  # a push certificate: its topic goes into iOS enrollment profiles


def _sync_body() -> dict[str, object]:
    return {"v": 1, "request_id": str(uuid.uuid4())}


async def _core_token(server: Server, config: Config, admin_token: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mdm", "tokens", "create", "core-server", "--scope", "core", "--json",
         "--url", listener_url(server, "admin"), "--data-dir", str(config.data_dir), "--token", admin_token],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["scopes"] == ["core"]
    return str(created["token"])


async def test_the_core_server_drives_the_service_with_its_own_scope(
    server: Server, config: Config, db: Database, admin_token: str
) -> None:
    token = await _core_token(server, config, admin_token)
    device = await enroll_device(server, config, db, identifier="c0ffee0000000001")
    other = await enroll_device(server, config, db, identifier="c0ffee0000000002", user_name="bob")
    async with httpx.AsyncClient(base_url=listener_url(server, "admin"), verify=client_ssl_context(config),
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30) as core:
        # Enrollments of both platforms.
        for platform in ("ios", "android"):
            r = await core.post("/api/v1/enrollments", json={"platform": platform, "user": "carol"})
            assert r.status_code == 201, r.text
            assert {"id", "url", "expires_at", "qr_png"} <= set(r.json())

        # Devices, one command, a bulk command, the command log, a recall.
        listed = await core.get("/api/v1/devices")
        assert listed.status_code == 200
        assert {d["id"] for d in listed.json()["items"]} == {device.device_id, other.device_id}
        sent = await core.post(f"/api/v1/devices/{device.device_id}/commands", json={"type": "Locate"})
        assert sent.status_code in (200, 201), sent.text
        guid = sent.json()["guid"]
        bulk = await core.post("/api/v1/commands", json={"devices": [device.device_id, other.device_id],
                                                         "type": "RefreshDeviceInfo"})
        assert bulk.status_code == 202, bulk.text
        assert (await core.get(f"/api/v1/bulk/{bulk.json()['id']}")).status_code == 200
        log = await core.get(f"/api/v1/devices/{device.device_id}/commands")
        assert log.status_code == 200
        assert guid in {c["guid"] for c in log.json()["items"]}
        recalled = await core.delete(f"/api/v1/commands/{guid}")
        assert recalled.status_code == 200, recalled.text
        assert (await core.get(f"/api/v1/commands/{guid}")).json()["status"] == "removed"

        # Removal: the device's identity is refused on the device listener from then on.
        async with kes_client(server, config, other) as agent:
            assert (await agent.post("/kes/v1/sync", json=_sync_body())).status_code == 200
            removed = await core.delete(f"/api/v1/devices/{other.device_id}")
            assert removed.status_code == 204, removed.text
            refused = await agent.post("/kes/v1/sync", json=_sync_body())
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "certificate_not_bound"
        assert (await core.get(f"/api/v1/devices/{other.device_id}")).status_code == 404

        # Status and events.
        status = await core.get("/api/v1/status")
        assert status.status_code == 200
        assert status.json()["overall"] in {"green", "yellow", "red", "light_blue"}
        events = await core.get("/api/v1/events", params={"limit": 500})
        assert events.status_code == 200
        assert "command_recalled" in {e["type"] for e in events.json()["items"]}

        # What it may not do: each refusal names the scope it lacks.
        document = (await core.get("/api/openapi.json")).json()
        refusals = [
            ("GET", "/api/v1/tokens", None, "admin"),
            ("POST", "/api/v1/tokens", {"name": "mine", "scopes": ["admin"]}, "admin"),
            ("DELETE", "/api/v1/tokens/core-server", None, "admin"),
            ("GET", "/api/v1/certificates", None, "pki"),
            ("POST", f"/api/v1/certificates/{device.serial_hex}/revoke", {"reason": "key_compromise"}, "pki"),
            ("POST", "/api/v1/policies", {"group": 1, "name": "p"}, "devices:write"),
            ("POST", "/api/v1/users", {"name": "mallory"}, "devices:write"),
            ("DELETE", "/api/v1/users/1", None, "devices:write"),
            ("POST", "/api/v1/groups", {"name": "g"}, "devices:write"),
            ("PUT", f"/api/v1/devices/{device.device_id}/group", {"group_id": None}, "devices:write"),
        ]
        if "/api/v1/events/dead-letter/replay" in document["paths"]:
            refusals.append(("POST", "/api/v1/events/dead-letter/replay", {"all": True}, "events:write"))
        for method, path, body, scope in refusals:
            r = await core.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert f"lacks scope {scope!r}" in r.json()["error"]["message"], (method, path, r.text)
    # The device the core server did not remove still syncs.
    async with kes_client(server, config, device) as agent:
        assert (await agent.post("/kes/v1/sync", json=_sync_body())).status_code == 200


async def test_the_scopes_are_documented_and_removal_needs_devices_delete(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    document = (await api.get("/api/openapi.json")).json()
    text = json.dumps(document)
    assert '"core"' in text and '"devices:delete"' in text  # the token scopes a client may ask for
    delete = document["paths"]["/api/v1/devices/{id}"]["delete"]
    assert "`devices:delete`" in delete["description"]
    status = document["paths"]["/api/v1/status"]["get"]
    assert "`events:read`" in status["description"]

    device = await enroll_device(server, config, db, identifier="c0ffee0000000003")
    tokens = {}
    for name, scopes in (("reader", ["devices:read"]), ("deleter", ["devices:delete"]),
                         ("writer", ["devices:write"])):
        r = await api.post("/api/v1/tokens", json={"name": name, "scopes": scopes})
        assert r.status_code == 201, r.text
        tokens[name] = r.json()["token"]
    path = f"/api/v1/devices/{device.device_id}"
    refused = await api.delete(path, headers={"Authorization": f"Bearer {tokens['reader']}"})
    assert refused.status_code == 403 and "lacks scope 'devices:delete'" in refused.json()["error"]["message"]
    # devices:write implies devices:delete; devices:delete alone is enough.
    def bearer(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[name]}"}

    assert (await api.delete(path, headers=bearer("deleter"))).status_code == 204
    again = await enroll_device(server, config, db, identifier="c0ffee0000000004")
    removed = await api.delete(f"/api/v1/devices/{again.device_id}", headers=bearer("writer"))
    assert removed.status_code == 204
