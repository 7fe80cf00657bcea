"""End to end over real TLS sockets, nothing on the server side imitated: an administrator makes an
Android enrollment through the admin API, the simulated agent downloads the package from the
one-time link on the web listener, registers over one-way TLS pinned to the M certificate, gets
its certificate, switches to mutual TLS, receives the policy made through ``/api/v1/policies`` and
reports its version (the API then shows desired == applied), and executes Block, Locate, Mugshot
(the admin API serves the very bytes uploaded) and Wipe sent through the admin API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from cryptography.hazmat.primitives import hashes
from kes_enroll_support import decode_qr

from mdm.config import Config
from mdm.db.engine import Database
from mdm.kes.tables import KesDevice
from mdm.server.runtime import Server
from mdm.sim.kes import package as kes_package
from mdm.sim.kes import protocol
from mdm.sim.kes.agent import DeviceGone, KesAgent
from mdm.sim.kes.facts import AndroidFacts
from mdm.sim.kes.http import PinMismatch
from mdm.sim.kes.protocol import KesError


@pytest.fixture
def extra_config() -> str:
    return "[kes]\nmin_sync_spacing_seconds = 0\n"


async def enroll_link(api: httpx.AsyncClient, user: str = "alice") -> str:
    response = await api.post("/api/v1/enrollments", json={"platform": "android", "user": user})
    assert response.status_code == 201, response.text
    url = response.json()["url"]
    assert isinstance(url, str) and url.startswith("https://")
    return str(url)


async def enrolled_agent(api: httpx.AsyncClient, server: Server, config: Config, seed: int = 1,
                         user: str = "alice") -> KesAgent:
    """An agent enrolled from the package its one-time link serves (the link's host and ports
    are those of the test server: its listeners are bound to free ports)."""
    link = await enroll_link(api, user)
    package = await kes_package.download(link, verify=client_ssl_context(config))
    kes_port = urlsplit(listener_url(server, "kes")).port
    assert package.port == kes_port, "the package names the port the kes listener is bound to"
    agent = KesAgent(package, AndroidFacts.generate(random.Random(seed)), rng=random.Random(seed),
                     host="127.0.0.1")
    await agent.enroll()
    assert agent.identity is not None and agent.device_id is not None
    return agent


async def send(api: httpx.AsyncClient, device_id: int, type_name: str, **args: Any) -> str:
    body: dict[str, Any] = {"type": type_name}
    if args:
        body["args"] = args
    response = await api.post(f"/api/v1/devices/{device_id}/commands", json=body)
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["guid"])


async def command_status(api: httpx.AsyncClient, guid: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/commands/{guid}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_enroll_policy_block_locate_mugshot_wipe(api: httpx.AsyncClient, server: Server,
                                                      config: Config) -> None:
    agent = await enrolled_agent(api, server, config)
    device_id = agent.device_id
    assert device_id is not None
    # The certificate is the enrollment user's; the device is associated with alice.
    record = (await api.get(f"/api/v1/devices/{device_id}")).json()
    assert record["identifier"] == agent.state.facts.android_id

    # A policy on the device's group, made through the API.
    group = (await api.post("/api/v1/groups", json={"name": "android fleet"})).json()
    assert (await api.put(f"/api/v1/devices/{device_id}/group", json={"group_id": group["id"]})).status_code \
        in (200, 204)
    agent.state.local_settings = {"wifi_only_updates": False, "screen_timeout_s": 120}
    created = await api.post("/api/v1/policies", json={
        "group_id": group["id"], "name": "corporate",
        "settings": {"camera_disabled": {"value": True, "locked": True},
                     "screen_timeout_s": {"value": 60, "locked": False},
                     "wifi_only_updates": {"value": True, "locked": True}}})
    assert created.status_code == 201, created.text

    answers = await agent.settle()
    assert any(a.policy_version for a in answers), "the first sync carries the policy"
    assert agent.state.settings_in_force == {"camera_disabled": True, "screen_timeout_s": 120,
                                             "wifi_only_updates": True}
    await agent.sync()  # reports the applied version
    view = (await api.get(f"/api/v1/policies/devices/{device_id}")).json()
    assert view["desired_version"] == agent.state.applied_policy_version != ""
    assert view["applied_version"] == view["desired_version"] and view["in_sync"] is True
    assert (await agent.sync()).policy_version is None, "an unchanged policy is not sent again"

    # Block, Locate, Mugshot through the admin API.
    block = await send(api, device_id, "Block")
    await agent.settle()
    assert agent.state.locked
    assert (await command_status(api, block))["status"] == "completed"

    locate = await send(api, device_id, "Locate")
    await agent.settle()
    assert (await command_status(api, locate))["status"] == "completed"
    record = (await api.get(f"/api/v1/devices/{device_id}")).json()
    location = record["inventory"]["location"]
    assert agent.state.location is not None
    assert location["values"]["latitude"] == agent.state.location.latitude
    assert location["values"]["longitude"] == agent.state.location.longitude

    mugshot = await send(api, device_id, "Mugshot")
    await agent.settle()
    assert (await command_status(api, mugshot))["status"] == "completed"
    shots = (await api.get(f"/api/v1/devices/{device_id}/mugshots")).json()["items"]
    assert len(shots) == 1
    picture = await api.get(f"/api/v1/devices/{device_id}/mugshots/{shots[0]['id']}")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    uploaded = agent.executor.executed[-1]
    assert uploaded.type == "mugshot" and uploaded.result is not None
    assert hashlib.sha256(picture.content).hexdigest() == uploaded.result["sha256"]

    wipe = await send(api, device_id, "Wipe")
    await agent.settle()
    assert agent.state.wiped == "full"
    assert (await command_status(api, wipe))["status"] == "completed"
    with pytest.raises(DeviceGone):
        await agent.sync()
    await agent.close()


async def test_a_server_whose_key_is_not_pinned_is_refused(api: httpx.AsyncClient, server: Server,
                                                           config: Config) -> None:
    """The package pins the M certificate's key: an agent holding another pin refuses the server
    before it sends anything (the token is still unused afterwards: a real agent can enroll)."""
    link = await enroll_link(api)
    package = await kes_package.download(link, verify=client_ssl_context(config))
    forged = kes_package.EnrollmentPackage(package.host, package.port,
                                           (hashlib.sha256(b"another key").digest(),), package.token)
    victim = KesAgent(forged, AndroidFacts.generate(random.Random(2)), host="127.0.0.1")
    with pytest.raises(PinMismatch):
        await victim.register()
    honest = KesAgent(package, AndroidFacts.generate(random.Random(2)), host="127.0.0.1")
    await honest.enroll()
    await honest.close()
    # The one-time link is gone, and the token cannot be used twice.
    again = KesAgent(package, AndroidFacts.generate(random.Random(3)), host="127.0.0.1")
    with pytest.raises(KesError) as refused:
        await again.enroll()
    assert refused.value.status == 403 and refused.value.code.startswith("token_")
    await again.close()


async def test_long_poll_answered_at_once_when_a_command_arrives(api: httpx.AsyncClient, server: Server,
                                                                 config: Config) -> None:
    """Without FCM, the agent holds a long-poll sync open; a command sent meanwhile answers it at
    once (not after the poll's 20 s)."""
    agent = await enrolled_agent(api, server, config, seed=4)
    assert agent.device_id is not None
    await agent.settle()
    stop = asyncio.Event()
    run = asyncio.ensure_future(agent.run(stop, mode="long_poll", long_poll=20))
    try:
        await asyncio.sleep(0.5)
        held = agent.syncs
        await asyncio.sleep(0.5)
        assert agent.syncs == held, "the long poll is held open while nothing happens"
        t0 = time.monotonic()
        guid = await send(api, agent.device_id, "Block")
        deadline = t0 + 10
        while not agent.state.locked:
            assert time.monotonic() < deadline, "the long poll was not answered"
            await asyncio.sleep(0.02)
        assert time.monotonic() - t0 < 5
        while (await command_status(api, guid))["status"] != "completed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await run
        await agent.close()


async def test_renews_its_certificate_when_the_sync_asks(api: httpx.AsyncClient, server: Server,
                                                         config: Config, db: Database) -> None:
    agent = await enrolled_agent(api, server, config, seed=5)
    assert agent.device_id is not None and agent.identity is not None
    await agent.settle()
    first = agent.identity.certificate
    async with db.transaction() as session:
        row = await session.get(KesDevice, agent.device_id)
        assert row is not None
        row.renew_requested_at = datetime.now(UTC)
    answer = await agent.sync()
    assert answer.renew_certificate
    assert agent.identity.certificate.serial_number != first.serial_number
    # Over mutual TLS with the new certificate: not asked again (the agent state this replica
    # cached with the request must not make the new certificate renew once more).
    assert not (await agent.sync()).renew_certificate
    async with db.session() as session:
        row = await session.get(KesDevice, agent.device_id)
        assert row is not None and row.renew_requested_at is None
        assert row.cert_fingerprint == agent.identity.certificate.fingerprint(hashes.SHA256())
    await agent.close()


async def test_mdm_sim_kes_enrolls_from_the_link(api: httpx.AsyncClient, server: Server,
                                                 config: Config) -> None:
    """``mdm sim kes`` (a subprocess) enrolls from the one-time link and syncs."""
    link = await enroll_link(api)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", "sim", "kes", "--url", link, "--ca", str(config.ca_dir / "root.pem"),
        "--host", "127.0.0.1", "--syncs", "1", "--seed", "9",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    text = out.decode()
    assert "key pinned" in text and "registered (device " in text and "mutual TLS" in text
    assert "sync 1: no command" in text
    devices = (await api.get("/api/v1/devices", params={"protocol": "kes"})).json()["items"]
    assert len(devices) == 1 and devices[0]["identifier"] in text


async def test_a_lost_answer_is_asked_again_with_the_same_request(api: httpx.AsyncClient, server: Server,
                                                                  config: Config) -> None:
    """The agent resends a sync whose answer it lost with the same bytes (the same request id): the
    server answers the same, the command is in both answers and runs once."""
    agent = await enrolled_agent(api, server, config, seed=6)
    assert agent.device_id is not None
    await agent.settle()
    guid = await send(api, agent.device_id, "Block")
    message = protocol.sync(agent.state, protocol.Report([], [], False, send_status=False))
    conn = agent._mutual_connection()
    first = await conn.request("POST", protocol.SYNC, protocol.encode(message),
                               headers={"Content-Type": protocol.JSON})
    await conn.close()  # as if the connection dropped before the answer arrived
    again = await conn.request("POST", protocol.SYNC, protocol.encode(message),
                               headers={"Content-Type": protocol.JSON})
    assert first.status == again.status == 200
    assert first.json() == again.json()
    assert [c["id"] for c in first.json()["commands"]] == [guid]
    other = protocol.sync(agent.state, protocol.Report([], [], False, send_status=False))
    assert (await conn.request("POST", protocol.SYNC, protocol.encode(other),
                               headers={"Content-Type": protocol.JSON})).json()["commands"] == [], \
        "a delivered command is not delivered again"
    await agent.close()


async def test_remove_command_and_user_unenroll_end_the_agent(api: httpx.AsyncClient, server: Server,
                                                              config: Config) -> None:
    removed = await enrolled_agent(api, server, config, seed=7)
    assert removed.device_id is not None
    await removed.settle()
    guid = await send(api, removed.device_id, "Remove")
    await removed.settle()
    assert removed.state.unenrolled
    assert (await command_status(api, guid))["status"] == "completed"
    with pytest.raises(DeviceGone):
        await removed.sync()
    removed.state.unenrolled = False  # a stale agent that tries anyway is refused
    with pytest.raises(KesError) as refused:
        await removed.sync()
    assert refused.value.status == 403
    await removed.close()

    leaving = await enrolled_agent(api, server, config, seed=8)
    await leaving.settle()
    await leaving.unenroll("user")
    assert leaving.state.gone
    leaving.state.unenrolled = False
    with pytest.raises(KesError) as gone:
        await leaving.sync()
    assert (gone.value.status, gone.value.code) == (403, "device_not_managed")
    await leaving.close()


async def test_enrolls_by_scanning_the_qr_code(api: httpx.AsyncClient, server: Server,
                                               config: Config) -> None:
    """The QR code of the enrollment (decoded from its PNG) is enough to enroll: server, pin, token."""
    created = await api.post("/api/v1/enrollments", json={"platform": "android", "user": "bob"})
    assert created.status_code == 201, created.text
    scanned = decode_qr(base64.b64decode(created.json()["qr_png"]))
    package = kes_package.EnrollmentPackage.parse(scanned)
    assert package.url == created.json()["url"] and package.pkcs12 is None
    agent = KesAgent(package, AndroidFacts.generate(random.Random(12)), host="127.0.0.1")
    await agent.enroll()
    await agent.settle()
    assert agent.device_id is not None
    record = (await api.get(f"/api/v1/devices/{agent.device_id}")).json()
    assert record["identifier"] == agent.state.facts.android_id
    await agent.close()
