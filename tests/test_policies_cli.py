"""``mdm policies`` as an operator runs it (``python -m mdm`` in a subprocess, against a real server):
create, set with and without locks, inheritance flags, profiles, tags, desired vs applied, and the
refusals (exit code, one line, nothing changed)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from typing import Any

import pytest
from conftest import listener_url
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device, Group, Protocol
from mdm.policies.seams import POLICIES
from mdm.policies.tables import Policy
from mdm.server.runtime import Server

TOKEN: list[str] = []


@pytest.fixture(autouse=True)
def _client(admin_token: str, server: Server) -> None:
    TOKEN[:] = [admin_token, listener_url(server, "admin")]


async def mdm(config: Config, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    env["MDM_API_TOKEN"] = TOKEN[0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", *args, "--data-dir", str(config.data_path), "--url", TOKEN[1],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(config: Config, *args: str) -> str:
    code, out, err = await mdm(config, *args)
    assert code == 0, (args, out, err)
    return out


async def as_json(config: Config, *args: str) -> Any:
    return json.loads(await ok(config, *args, "--json"))


async def min_length(config: Config, device: int) -> Any:
    view = await as_json(config, "policies", "device", str(device))
    return view["settings"]["password.min_length"]["value"]


async def fleet(db: Database) -> dict[str, int]:
    async with db.transaction() as session:
        corp = Group(name="Corp")
        session.add(corp)
        await session.flush()
        sales = Group(name="Sales", parent_id=corp.id)
        session.add(sales)
        await session.flush()
        phone = Device(protocol=Protocol.KES.value, identifier="android-1", group_id=sales.id, inventory={},
                       attributes={"kes_local_settings": {"camera.allowed": False, "ringtone": "bell",
                                                          "password.min_length": 2}})
        session.add(phone)
        await session.flush()
        return {"corp": corp.id, "sales": sales.id, "phone": phone.id}


async def test_an_operator_builds_policies_with_the_cli(config: Config, server: Server, db: Database) -> None:
    ids = await fleet(db)
    out = await ok(config, "policies", "create", "Corp")
    assert out.startswith("created policy ") and f"for group {ids['corp']}" in out
    await ok(config, "policies", "set", "Corp", "password.min_length", "8", "--lock")
    await ok(config, "policies", "set", "Corp", "camera.allowed", "true")
    await ok(config, "policies", "create", "Corp/Sales", "--name", "sales")
    out = await ok(config, "policies", "set", "Sales", "password.min_length", "4")
    assert "(unlocked)" in out
    await ok(config, "policies", "set", "Sales", "wifi.ssid", "sales-wifi")  # not JSON: a string
    await ok(config, "policies", "set", "Sales", "pin", "1234", "--string")
    corp = await as_json(config, "policies", "show", "Corp")
    assert corp["settings"] == {"camera.allowed": {"value": True, "locked": False},
                                "password.min_length": {"value": 8, "locked": True}}
    assert corp["revision"] == 3
    listed = await as_json(config, "policies", "list", "--group", "Sales")
    sales = await as_json(config, "policies", "show", str(listed["items"][0]["id"]))
    assert sales["settings"]["wifi.ssid"]["value"] == "sales-wifi"
    assert sales["settings"]["pin"]["value"] == "1234"
    # Desired on the device: Corp's lock wins; the device's local settings fill in the rest.
    view = await as_json(config, "policies", "device", str(ids["phone"]))
    assert view["settings"]["password.min_length"]["value"] == 8
    assert view["applied_settings"] == {"password.min_length": 8, "camera.allowed": False, "ringtone": "bell",
                                        "wifi.ssid": "sales-wifi", "pin": "1234"}
    text = await ok(config, "policies", "device", str(ids["phone"]))
    assert re.search(r"^\s*in sync\W+no$", text, re.M), text
    assert "(none reported)" in text
    resolver = server.ctx.services[POLICIES]
    async with db.transaction() as session:
        await resolver.record_applied(session, ids["phone"], view["desired_version"])
    assert (await as_json(config, "policies", "device", str(ids["phone"])))["in_sync"] is True
    # Inheritance flags and locks.
    await ok(config, "policies", "inherit", "Sales", "off")
    assert (await min_length(config, ids["phone"])) == 4
    await ok(config, "policies", "force-inheritance", "Corp", "on")
    assert (await min_length(config, ids["phone"])) == 8
    await ok(config, "policies", "unlock", "Corp", "password.min_length")
    await ok(config, "policies", "unset", "Sales", "pin")
    assert "pin" not in (await as_json(config, "policies", "show", "Sales"))["settings"]
    # Profiles and tags.
    out = await ok(config, "policies", "profiles", "add", "Sales", "field", "--priority", "3",
                   "--tags-any", "field,travel")
    assert "when any of field,travel" in out
    await ok(config, "policies", "profiles", "set", "Sales", "field", "camera.allowed", "false", "--lock")
    await ok(config, "policies", "profiles", "add", "Sales", "evenings",
             "--office-hours", "mon-fri 08:00-18:00", "--timezone", "Europe/Berlin")
    listed = await ok(config, "policies", "profiles", "list", "Sales")
    assert "outside mon,tue,wed,thu,fri 08:00-18:00 (Europe/Berlin)" in listed
    out = await ok(config, "policies", "tags", str(ids["phone"]), "travel", "blue")
    assert out.strip() == f"device {ids['phone']}: blue, travel"
    view = await as_json(config, "policies", "device", str(ids["phone"]))
    assert view["settings"]["camera.allowed"]["locked"] is True
    assert view["settings"]["camera.allowed"]["source"].endswith("/field")
    await ok(config, "policies", "profiles", "edit", "Sales", "field", "--inactive")
    await ok(config, "policies", "profiles", "delete", "Sales", "evenings")
    assert [p["name"] for p in (await as_json(config, "policies", "show", "Sales"))["profiles"]] == ["field"]
    await ok(config, "policies", "deactivate", "Sales")
    assert (await as_json(config, "policies", "list"))["items"][1]["active"] is False
    await ok(config, "policies", "delete", "Sales", "--yes")
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Policy)) == 1


async def test_refusals_exit_non_zero_and_change_nothing(
    config: Config, server: Server, db: Database
) -> None:
    ids = await fleet(db)
    await ok(config, "policies", "create", "Corp")
    before = await as_json(config, "policies", "show", "Corp")
    for args, message in [
        (("policies", "create", "Corp"), "already has policy"),
        (("policies", "show", "Sales"), "has no policy"),
        (("policies", "set", "Corp", "bad key", "1"), "should match pattern"),
        (("policies", "set", "Corp", "k", "null"), "null is not a setting value"),
        (("policies", "unset", "Corp", "nope"), "no setting 'nope'"),
        (("policies", "profiles", "add", "Corp", "p", "--office-hours", "mon 09:00-17:00", "--timezone",
          "Mars/Base"), "unknown time zone"),
        (("policies", "profiles", "add", "Corp", "p", "--office-hours", "mon 09:00-17:00"),
         "needs --timezone"),
        (("policies", "device", "999999"), "no device"),
        (("policies", "tags", str(ids["phone"]), "bad tag"), "tag"),
    ]:
        code, out, err = await mdm(config, *args)
        assert code != 0, (args, out)
        assert message in err, (args, err)
    assert await as_json(config, "policies", "show", "Corp") == before
