"""Wake-ups of KES devices: through FCM (the contract fake) and, where FCM cannot be reached, the
long-poll sync answered at once when work arrives; policy delivery with a resolver of our own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.devfakes.fcm import FcmFake
from mdm.kes.keys_sync import SYNC
from mdm.plugins import PLUGINS
from mdm.policies.seams import EffectivePolicy, PolicySetting
from mdm.push.fcm.oauth import ServiceAccount
from mdm.server.runtime import Server, open_context
from tests.conftest import PG_URL, listener_url
from tests.fcm_support import write_account
from tests.kes_sync_support import kes_row, new_agent

pytestmark = pytest.mark.asyncio
TOKEN = "fcm-token-of-the-phone"


@dataclass
class Fcm:
    fake: FcmFake
    toml: str
    messages: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)


@pytest.fixture
async def fcm(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Fcm]:
    holder: list[Fcm] = []
    fake = FcmFake(on_message=lambda token, data: holder[0].messages.append((token, data)))
    urls = await fake.start()
    account_file = write_account(tmp_path / "fcm-sa.json", urls.token_url)
    fake.add_service_account(ServiceAccount.load(account_file))
    base = urls.base_url
    if getattr(request, "param", "") == "unreachable":
        await fake.stop()  # the port is closed: every send fails to connect
    toml = (f'[fcm]\nservice_account_file = "{account_file}"\nbase_url = "{base}"\n'
            f'token_url = "{urls.token_url}"\n')
    holder.append(Fcm(fake, toml))
    try:
        yield holder[0]
    finally:
        await fake.stop()


@pytest.fixture
def extra_config(fcm: Fcm) -> str:
    kes = "[kes]\nmin_sync_spacing_seconds = 0\nlong_poll_max_seconds = 20\nlong_poll_max_waiters = 2\n"
    return kes + fcm.toml


async def _until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_command_reaches_fcm_with_the_devices_token(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient, fcm: Fcm
) -> None:
    agent = await new_agent(db, config, fcm_token=TOKEN)
    r = await api.post(f"/api/v1/devices/{agent.device_id}/commands", json={"type": "Locate"})
    assert r.status_code == 201, r.text
    await _until(lambda: fcm.messages)
    assert fcm.messages[0][0] == TOKEN


@pytest.mark.parametrize("fcm", ["unreachable"], indirect=True)
async def test_with_fcm_unreachable_a_long_poll_is_answered_within_a_second_of_the_enqueue(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient, fcm: Fcm
) -> None:
    agent = await new_agent(db, config, fcm_token=TOKEN)
    service = server.ctx.services[SYNC]
    async with agent.client(server) as client:
        poll = asyncio.create_task(agent.sync(client, wait=15))
        await _until(lambda: service.longpolls.waiting(agent.device_id))
        started = time.monotonic()
        r = await api.post(f"/api/v1/devices/{agent.device_id}/commands", json={"type": "Block"})
        assert r.status_code == 201, r.text
        answer = await asyncio.wait_for(poll, 5)
        elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert [c["type"] for c in answer.json()["commands"]] == ["lock"]
    assert elapsed < 1.0, elapsed
    assert fcm.messages == []
    assert len(service.longpolls) == 0


async def test_a_long_poll_without_work_ends_empty_and_a_disconnect_frees_the_waiter(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    service = server.ctx.services[SYNC]
    async with agent.client(server) as client:
        started = time.monotonic()
        answer = await agent.sync(client, wait=0.5)
        assert answer.status_code == 200 and answer.json()["commands"] == []
        assert 0.45 <= time.monotonic() - started < 5
    async with agent.client(server) as client:
        poll = asyncio.create_task(agent.sync(client, wait=15))
        await _until(lambda: service.longpolls.waiting(agent.device_id))
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
    await _until(lambda: len(service.longpolls) == 0)


async def test_waiters_are_bounded(server: Server, config: Config, db: Database) -> None:
    agents = [await new_agent(db, config) for _ in range(3)]
    service = server.ctx.services[SYNC]
    clients = [a.client(server) for a in agents]
    try:
        polls = [asyncio.create_task(a.sync(c, wait=15)) for a, c in zip(agents[:2], clients, strict=False)]
        await _until(lambda: len(service.longpolls) == 2)
        started = time.monotonic()
        third = await agents[2].sync(clients[2], wait=15)  # beyond the limit: answered at once
        assert third.status_code == 200 and time.monotonic() - started < 2
        service.longpolls.wake_all()
        for poll in polls:
            assert (await asyncio.wait_for(poll, 5)).status_code == 200
    finally:
        for c in clients:
            await c.aclose()


class Policies:
    """A ``PolicyResolver`` of our own: one policy for every device, its applied versions recorded."""

    def __init__(self) -> None:
        self.policy = EffectivePolicy("v1", {"camera": PolicySetting(False, True),
                                             "wifi": PolicySetting("corp", False)})
        self.applied: list[tuple[int, str]] = []

    async def effective(self, session: AsyncSession, device_id: int, group_id: int | None) -> EffectivePolicy:
        return self.policy

    async def record_applied(self, session: AsyncSession, device_id: int, version: str) -> None:
        self.applied.append((device_id, version))


async def test_the_policy_is_sent_when_its_version_changes_and_a_new_one_wakes_the_long_poll(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    policies = Policies()
    service = server.ctx.services[SYNC]
    service.policies = policies
    async with agent.client(server) as client:
        first = (await agent.sync(client)).json()
        assert first["policy"] == {"version": "v1", "settings": {
            "camera": {"value": False, "locked": True}, "wifi": {"value": "corp", "locked": False}}}
        assert (await kes_row(db, agent.device_id)).policy_sent_version == "v1"
        assert (await agent.sync(client)).json()["policy"] is None  # sent, nothing reported
        # The device reports an older version applied: sent again.
        assert (await agent.sync(client, applied_policy_version="v0")).json()["policy"]["version"] == "v1"
        assert (await agent.sync(client, applied_policy_version="v1")).json()["policy"] is None
        assert policies.applied == [(agent.device_id, "v0"), (agent.device_id, "v1")]
        assert (await kes_row(db, agent.device_id)).policy_applied_version == "v1"
        # Reporting the same version again writes nothing.
        assert (await agent.sync(client, applied_policy_version="v1")).json()["policy"] is None
        assert len(policies.applied) == 2
        poll = asyncio.create_task(agent.sync(client, wait=15, applied_policy_version="v1"))
        await _until(lambda: service.longpolls.waiting(agent.device_id))
        policies.policy = EffectivePolicy("v2", {"camera": PolicySetting(True, True)})
        await server.ctx.pushers.wake(Protocol.KES, [agent.device_id], "policy")
        answer = (await asyncio.wait_for(poll, 5)).json()
    assert answer["policy"] == {"version": "v2", "settings": {"camera": {"value": True, "locked": True}}}


async def test_the_policies_resolver_of_the_server_reaches_the_sync(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    """With the policies feature's own resolver: a group policy goes out once, a change wakes the
    long poll with the new version, the applied version shows in the agent state."""
    group = (await api.post("/api/v1/groups", json={"name": "kes policy"})).json()
    agent = await new_agent(db, config, group_id=group["id"])
    created = await api.post("/api/v1/policies", json={
        "group_id": group["id"], "name": "base", "settings": {"camera": {"value": False, "locked": True}}})
    assert created.status_code == 201, created.text
    service = server.ctx.services[SYNC]
    async with agent.client(server) as client:
        first = (await agent.sync(client)).json()["policy"]
        assert first is not None and first["settings"] == {"camera": {"value": False, "locked": True}}
        assert (await agent.sync(client, applied_policy_version=first["version"])).json()["policy"] is None
        poll = asyncio.create_task(agent.sync(client, wait=15, applied_policy_version=first["version"]))
        await _until(lambda: service.longpolls.waiting(agent.device_id))
        changed = await api.patch(f"/api/v1/policies/{created.json()['id']}", json={
            "settings": {"camera": {"value": True, "locked": True}}})
        assert changed.status_code == 200, changed.text
        second = (await asyncio.wait_for(poll, 10)).json()["policy"]
    assert second is not None and second["version"] != first["version"]
    assert second["settings"] == {"camera": {"value": True, "locked": True}}
    state = (await api.get(f"/api/v1/kes/devices/{agent.device_id}")).json()
    assert state["policy_applied_version"] == first["version"]
    assert state["policy_sent_version"] == state["policy_desired_version"] == second["version"]


@pytest.mark.skipif(not PG_URL, reason="replicas share a PostgreSQL database")
async def test_a_command_sent_on_another_replica_answers_the_long_poll(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    replica = Server(await open_context(config), PLUGINS)
    await replica.start()
    try:
        agent = await new_agent(db, config)
        waiting_on = replica.ctx.services[SYNC]
        await asyncio.sleep(0.5)  # the replica's listener connects
        async with httpx.AsyncClient(base_url=listener_url(replica, "kes"), verify=agent.ssl_context(),
                                     timeout=30) as client:
            assert (await agent.sync(client)).json()["commands"] == []  # its hint: nothing queued
            poll = asyncio.create_task(agent.sync(client, wait=15))
            await _until(lambda: waiting_on.longpolls.waiting(agent.device_id))
            started = time.monotonic()
            sent = await api.post(f"/api/v1/devices/{agent.device_id}/commands", json={"type": "Alarm"})
            assert sent.status_code == 201, sent.text
            answer = await asyncio.wait_for(poll, 10)
            elapsed = time.monotonic() - started
        assert [c["type"] for c in answer.json()["commands"]] == ["alarm"]
        assert elapsed < 2.0, elapsed
    finally:
        await replica.stop()
