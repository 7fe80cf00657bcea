"""``GET /api/v1/status`` and ``mdm status`` against the real server (both engines): the
document's shape and order, the scope (events:read, implied by core), a light moved by a real
condition (a command left queued for days), the kes listener disabled by configuration, and the
CLI's output and exit status."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.config import Config
from mdm.core import tokens
from mdm.core.status import AREAS, AreaStatus
from mdm.db.engine import Database
from mdm.eas.status import DISABLED as EAS_DISABLED
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, open_context
from tests.push_dispatch_support import add_device, queue_command
from tests.status_support import age_queue


async def _token(db: Database, name: str, *scopes: str) -> str:
    async with db.transaction() as session:
        _, token = await tokens.create(session, name, list(scopes))
    return token


def _client(server: Server, config: Config, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=listener_url(server, "admin"), verify=client_ssl_context(config),
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)


async def _cli(config: Config, server: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mdm", "status", "--url", listener_url(server, "admin"),
         "--data-dir", str(config.data_dir), "--token", token, *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


async def test_status_document_scopes_and_a_red_light_with_the_cli(
    server: Server, config: Config, db: Database
) -> None:
    reader = await _token(db, "monitor", "events:read")
    core = await _token(db, "core-server", "core")
    other = await _token(db, "devices-only", "devices:read")
    async with _client(server, config, reader) as api:
        r = await api.get("/api/v1/status")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert set(doc) == {"overall", "generated_at", "areas"}
        assert [a["area"] for a in doc["areas"]] == list(AREAS)
        by_area = {a["area"]: a for a in doc["areas"]}
        assert by_area["eas"] == {"area": "eas", "light": "grey", "reason": EAS_DISABLED, "details": {}}
        # The registered sources answer (none of them greyed by an error).
        for area in ("enrollment", "push", "certificates", "command_backlog", "android"):
            assert not (by_area[area]["reason"] or "").startswith("could not be computed"), by_area[area]
        assert by_area["command_backlog"]["light"] == "green"
        assert by_area["enrollment"]["light"] == "light_blue"  # no device yet
        assert by_area["certificates"]["light"] == "green"
        for area in doc["areas"]:
            assert area["light"] == "green" or area["reason"], area
    async with _client(server, config, other) as api:
        refused = await api.get("/api/v1/status")
        assert refused.status_code == 403
        assert "events:read" in refused.json()["error"]["message"]
    async with _client(server, config, core) as api:
        assert (await api.get("/api/v1/status")).status_code == 200

    green = await _cli(config, server, reader)
    assert green.returncode == 0, green.stderr
    assert "eas" in green.stdout and "[eas] enabled = false" in green.stdout

    command = await queue_command(db, await add_device(db, "left-behind"))
    await age_queue(db, command, timedelta(days=9))
    await asyncio.sleep(2.1)  # the document is kept two seconds
    red = await _cli(config, server, reader)
    assert red.returncode == 2, (red.stdout, red.stderr)
    line = next(x for x in red.stdout.splitlines() if x.startswith("command_backlog"))
    assert "RED" in line and "the oldest queued command has waited 9 days" in line
    assert red.stdout.splitlines()[0].startswith("overall: RED")
    raw = await _cli(config, server, reader, "--json")
    assert raw.returncode == 2
    document = json.loads(raw.stdout)
    assert document["overall"] == "red"
    assert {a["area"]: a["light"] for a in document["areas"]}["command_backlog"] == "red"

    refused_cli = await _cli(config, server, other)
    assert refused_cli.returncode == 1 and "events:read" in refused_cli.stderr


async def test_android_is_grey_when_the_kes_listener_is_disabled(config: Config, admin_token: str) -> None:
    config.listeners.kes.enabled = False  # [listeners.kes] enabled = false
    srv = Server(await open_context(config), PLUGINS)
    await srv.start()
    try:
        async with _client(srv, config, admin_token) as api:
            doc = (await api.get("/api/v1/status")).json()
    finally:
        await srv.stop()
    android = next(a for a in doc["areas"] if a["area"] == "android")
    assert android["light"] == "grey" and "kes listener is disabled" in android["reason"]


async def test_android_without_fcm_is_yellow(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/api/v1/status")).json()
    android = next(a for a in doc["areas"] if a["area"] == "android")
    assert android["light"] == "yellow" and "FCM is not configured" in android["reason"]


async def test_the_exit_status_is_documented_in_help() -> None:
    shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "mdm", "status", "--help"],
                                    capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "Exit status: 0 when no light is red, 2 when any light is red" in text


class _Broken:
    area = "eas"

    async def status(self, session: AsyncSession) -> AreaStatus:
        raise RuntimeError("no EAS gateway table")


async def test_a_failing_source_is_grey_in_a_200_answer(
    server: Server, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.ctx.status._sources.pop("eas")  # the EAS plugin's source, replaced by a broken one
    server.ctx.status.register(_Broken())
    r = await api.get("/api/v1/status")
    assert r.status_code == 200, r.text
    eas = next(a for a in r.json()["areas"] if a["area"] == "eas")
    assert eas == {"area": "eas", "light": "grey", "details": {},
                   "reason": "could not be computed: RuntimeError: no EAS gateway table"}
    assert "the eas light could not be computed" in caplog.text
