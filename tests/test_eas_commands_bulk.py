"""EAS commands in bulk (``POST /api/v1/commands``) and from the CLI (``mdm command send``): the
executor drains a few hundred queued commands in bounded batches, each reaching Exchange once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from cli_run import mdm_cli
from conftest import listener_url
from eas_commands_support import Switchable, make_runner, seed_from_org, wait_command
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Command
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.cmdlets import Naming
from mdm.eas.keys_commands import EXECUTOR, RUNNER
from mdm.server.runtime import Server

DEVICES = 200


@pytest.fixture
def extra_config() -> str:
    return "[eas]\ncommand_poll_seconds = 0.2\nconcurrency = 8\n"


@pytest.fixture
async def org(server: Server, db: Database) -> AsyncIterator[tuple[Organisation, dict[str, int]]]:
    org = Organisation(naming=Naming.EXCHANGE_2010)
    for n in range(DEVICES):
        org.add_device(org.add_mailbox(f"user{n:03d}"), f"Appl{n:08d}")
    runner = Switchable(make_runner(org))
    server.ctx.services[RUNNER] = runner
    ids = await seed_from_org(db, runner)
    await server.ctx.services[EXECUTOR].refresh_policies()
    org.calls.clear()
    yield org, ids


async def _finished(db: Database, type_: str) -> dict[str, int]:
    async with db.session() as session:
        rows = await session.execute(select(Command.status, func.count()).where(Command.type == type_)
                                     .group_by(Command.status))
        return {str(row[0]): int(row[1]) for row in rows}


async def test_bulk_disable_reaches_every_mailbox_once(
    org: tuple[Organisation, dict[str, int]], api: httpx.AsyncClient, db: Database
) -> None:
    organisation, ids = org
    assert len(ids) == DEVICES
    body = {"devices": sorted(ids.values()), "type": "DisableActiveSync"}
    r = await api.post("/api/v1/commands", json=body)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while (await _finished(db, "DisableActiveSync")).get("completed", 0) < DEVICES:
        assert time.monotonic() < deadline, await _finished(db, "DisableActiveSync")
        await asyncio.sleep(0.2)
    assert await _finished(db, "DisableActiveSync") == {"completed": DEVICES}
    calls = [c for c in organisation.calls if c.name == "Set-CASMailbox"]
    assert len(calls) == DEVICES
    assert len({c.params["Identity"] for c in calls}) == DEVICES  # each mailbox once
    with organisation.lock:
        assert not [m for m in organisation.store.mailboxes.values() if m.activesync_enabled]


async def test_bulk_with_a_bad_policy_argument_is_refused(
    org: tuple[Organisation, dict[str, int]], api: httpx.AsyncClient
) -> None:
    _, ids = org
    body = {"devices": sorted(ids.values())[:5], "type": "AssignEasPolicy",
            "args": {"policy": "Nobody knows it"}}
    r = await api.post("/api/v1/commands", json=body)
    assert r.status_code == 422, r.text


async def test_wipe_sent_with_the_cli_runs_against_exchange(
    org: tuple[Organisation, dict[str, int]], api: httpx.AsyncClient, server: Server, config: Config,
    admin_token: str,
) -> None:
    organisation, ids = org
    device_id = ids["Appl00000007"]
    code, out, err = await mdm_cli(config, "command", "send", str(device_id), "Wipe", "--json",
                                   "--url", listener_url(server, "admin"), "--token", admin_token)
    assert code == 0, err
    guid = json.loads(out)["guid"]
    command = await wait_command(api, device_id, guid)
    assert command["status"] == "completed", command
    (call,) = [c for c in organisation.calls if c.name == "Clear-ActiveSyncDevice"]  # a 2010 server
    assert call.params["Confirm"] is False
    code, out, err = await mdm_cli(config, "command", "log", str(device_id),
                                   "--url", listener_url(server, "admin"), "--token", admin_token)
    assert code == 0, err
    assert "keeps wiping the device at every sync until it is removed" in out
