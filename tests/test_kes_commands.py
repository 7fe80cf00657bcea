"""The KES command translator, and KES devices through the same API, CLI, command log and bulk
path as iOS devices."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest

from mdm.config import Config
from mdm.core.errors import InvalidArgument
from mdm.core.library import KES, LIBRARY, DeviceFacts
from mdm.db.engine import Database
from mdm.db.models import Device
from mdm.kes.commands import COMMANDS, MASK, KesCommandTranslator
from mdm.server.runtime import Server
from tests.bulk_support import send_bulk
from tests.conftest import listener_url
from tests.kes_sync_support import command, new_agent, result

T = KesCommandTranslator()
PHONE = Device(protocol=2, os_name="Android", model="Pixel", attributes={}, inventory={})
SHA = "ab" * 32
APK = "https://apps.example/a.apk"


@pytest.fixture
def extra_config() -> str:
    return "[kes]\nmin_sync_spacing_seconds = 0\n"


def test_every_kes_command_of_the_library_has_a_translation() -> None:
    assert set(COMMANDS) == {name for name, c in LIBRARY.items() if KES in c.protocols}


@pytest.mark.parametrize(("library", "args", "payload"), [
    ("Block", {"message": "call me"}, {"type": "lock", "args": {"message": "call me"}}),
    ("Block", {}, {"type": "lock", "args": {}}),
    ("Unblock", {}, {"type": "unlock", "args": {}}),
    ("ResetPassword", {"password": "1234"}, {"type": "reset_password", "args": {"password": "1234"}}),
    ("Wipe", {}, {"type": "wipe", "args": {}}),
    ("SoftWipe", {}, {"type": "wipe_corporate", "args": {}}),
    ("Locate", {}, {"type": "locate", "args": {}}),
    ("Alarm", {"duration_seconds": 30}, {"type": "alarm", "args": {"duration_seconds": 30}}),
    ("Mugshot", {}, {"type": "mugshot", "args": {}}),
    ("InstallApplication", {"url": APK, "sha256": SHA.upper(), "package": "com.ex.a"},
     {"type": "install_apk", "args": {"url": APK, "sha256": SHA, "package": "com.ex.a"}}),
    ("DeleteApplication", {"package": "com.ex.a"}, {"type": "remove_apk", "args": {"package": "com.ex.a"}}),
    ("RefreshDeviceInfo", {}, {"type": "inventory", "args": {}}),
    ("Remove", {}, {"type": "unenroll", "args": {}}),
])
def test_translation(library: str, args: dict[str, Any], payload: dict[str, Any]) -> None:
    assert T.translate(library, args, PHONE) == payload
    T.check_args(library, args)
    schema = T.arg_schema(library)
    assert schema is not None and schema["type"] == "object"


@pytest.mark.parametrize(("library", "args", "field"), [
    ("InstallApplication", {"url": "http://apps.example/a.apk", "sha256": SHA}, "url"),
    ("InstallApplication", {"url": "https://", "sha256": SHA}, "url"),
    ("InstallApplication", {"url": "https://apps.example/a.apk", "sha256": "abc"}, "sha256"),
    ("InstallApplication", {"sha256": SHA}, "url"),
    ("DeleteApplication", {}, "package"),
    ("DeleteApplication", {"package": "not a package"}, "package"),
    ("Alarm", {"duration_seconds": 0}, "duration_seconds"),
    ("Block", {"message": "x", "phone": "1"}, "phone"),
    ("Wipe", {"keep_data": True}, "keep_data"),
])
def test_argument_errors_name_the_field(library: str, args: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        T.translate(library, args, PHONE)
    assert caught.value.details["field"] == field
    with pytest.raises(InvalidArgument):
        T.check_args(library, args)


def test_the_password_is_masked_and_the_bulk_key_is_one_variant() -> None:
    assert T.public_args("ResetPassword", {"password": "1234"}) == {"password": MASK}
    key = T.bulk_key("ResetPassword", {"password": "1234"})
    assert key is not None
    facts = [DeviceFacts(i, 2, "Android", m, {}) for i, m in ((1, "Pixel"), (2, "Galaxy"))]
    assert {key.key(f) for f in facts} == {None}


@pytest.mark.asyncio
async def test_the_admin_api_sends_a_kes_command_and_the_log_masks_the_password(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    agent = await new_agent(db, config)
    r = await api.post(f"/api/v1/devices/{agent.device_id}/commands",
                       json={"type": "ResetPassword", "args": {"password": "s3cret"}})
    assert r.status_code == 201, r.text
    guid = r.json()["guid"] if "guid" in r.json() else r.json()["id"]
    bad = await api.post(f"/api/v1/devices/{agent.device_id}/commands",
                         json={"type": "InstallApplication", "args": {"url": "ftp://x", "sha256": SHA}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_argument"
    async with agent.client(server) as client:
        out = (await agent.sync(client)).json()["commands"]
        assert out == [{"id": guid, "type": "reset_password", "args": {"password": "s3cret"}}]
        assert (await agent.sync(client, results=[result(guid)])).status_code == 200
    log = (await api.get(f"/api/v1/devices/{agent.device_id}/commands")).json()["items"][0]
    assert log["args"] == {"password": MASK} and log["status"] == "completed"
    assert [j["status"] for j in log["journal"]] == ["processing", "delivered", "completed"]
    assert "s3cret" not in str(log)
    stored = await command(db, guid)
    assert stored.payload == {}  # the secret is gone once the command is finished
    schemas = (await api.get("/api/v1/command-types?args=true")).json()["items"]
    install = next(c for c in schemas if c["name"] == "InstallApplication")
    assert "kes" in install["args"]


@pytest.mark.asyncio
async def test_a_bulk_operation_reaches_kes_devices(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    agents = [await new_agent(db, config) for _ in range(3)]
    done = await send_bulk(api, [a.device_id for a in agents], "Alarm", {"duration_seconds": 10})
    assert (done["queued"], done["skipped"]) == (3, 0), done
    for agent in agents:
        async with agent.client(server) as client:
            out = (await agent.sync(client)).json()["commands"]
        assert [(c["type"], c["args"]) for c in out] == [("alarm", {"duration_seconds": 10})]


@pytest.mark.asyncio
async def test_the_cli_sends_a_kes_command(
    server: Server, config: Config, db: Database, admin_token: str, tmp_path: Any
) -> None:
    agent = await new_agent(db, config)
    home = tmp_path / "home"
    home.mkdir()
    argv = [sys.executable, "-m", "mdm", "command", "send", str(agent.device_id), "InstallApplication",
            "--arg", "url=https://apps.example/a.apk", "--arg", f"sha256={SHA}",
            "--url", listener_url(server, "admin"), "--token", admin_token,
            "--data-dir", str(config.data_path)]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE, env={"HOME": str(home),
                                                   "PATH": "/usr/bin:/bin"})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith(f"queued InstallApplication for device {agent.device_id}: ")
    async with agent.client(server) as client:
        sent = (await agent.sync(client)).json()["commands"]
    assert sent[0]["type"] == "install_apk" and sent[0]["args"]["sha256"] == SHA
