"""POST /kes/v1/mugshot (the picture of a delivered Mugshot command) and the admin API that
serves the pictures."""

from __future__ import annotations

import httpx
import pytest

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import CommandStatus
from mdm.kes.tables import KesMugshot
from mdm.server.runtime import Server
from tests.ios_support import snapshot
from tests.kes_sync_support import Agent, command, count, enqueue, event_types, new_agent

pytestmark = pytest.mark.asyncio

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 8 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(300)


@pytest.fixture
def extra_config() -> str:
    return "[kes]\nmin_sync_spacing_seconds = 0\nmax_mugshot_bytes = 4096\n"


async def _delivered_mugshot(db: Database, agent: Agent, client: httpx.AsyncClient) -> str:
    guid = await enqueue(db, agent.device_id, "Mugshot")
    out = (await agent.sync(client)).json()["commands"]
    assert out == [{"id": guid, "type": "mugshot", "args": {}}]
    return guid


async def _upload(client: httpx.AsyncClient, guid: str, data: bytes, content_type: str = "image/jpeg",
                  **headers: str) -> httpx.Response:
    return await client.post(f"/kes/v1/mugshot?command_id={guid}", content=data,
                             headers={"Content-Type": content_type, **headers})


async def test_a_picture_completes_the_command_and_the_api_serves_it(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    agent = await new_agent(db, config)
    async with agent.client(server) as client:
        guid = await _delivered_mugshot(db, agent, client)
        response = await _upload(client, guid, JPEG)
        assert response.status_code == 200, response.text
        mugshot_id = response.json()["mugshot_id"]
        assert response.json() == {"v": 1, "mugshot_id": mugshot_id}
        # A retry after a lost answer: the same picture gets the same answer, nothing new.
        again = await _upload(client, guid, JPEG)
        assert again.status_code == 200 and again.json() == response.json()
        # A completed result in a later sync is a duplicate, ignored.
        assert (await agent.sync(client, results=[{"command_id": guid, "status": "completed",
                                                   "at": "2026-12-03T10:00:00Z"}])).status_code == 200
    done = await command(db, guid)
    assert done.status == CommandStatus.COMPLETED
    assert done.result_data == {"mugshot_id": mugshot_id, "content_type": "image/jpeg", "size": len(JPEG)}
    assert "kes_mugshot_received" in await event_types(db, agent.device_id)
    assert await count(db, KesMugshot) == 1
    listed = (await api.get(f"/api/v1/devices/{agent.device_id}/mugshots")).json()
    assert [(m["id"], m["command"], m["size"]) for m in listed["items"]] == [(mugshot_id, guid, len(JPEG))]
    assert listed["next_cursor"] is None
    picture = await api.get(f"/api/v1/devices/{agent.device_id}/mugshots/{mugshot_id}")
    assert picture.status_code == 200 and picture.content == JPEG
    assert picture.headers["Content-Type"] == "image/jpeg"
    missing = await api.get(f"/api/v1/devices/{agent.device_id}/mugshots/{mugshot_id + 1}")
    assert missing.status_code == 404
    other = await new_agent(db, config)
    assert (await api.get(f"/api/v1/devices/{other.device_id}/mugshots/{mugshot_id}")).status_code == 404
    state = (await api.get(f"/api/v1/kes/devices/{agent.device_id}")).json()
    assert (state["device_id"], state["bound"], state["agent_version"]) == (agent.device_id, True, "1.0")


async def test_png_pictures_and_paging(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    agent = await new_agent(db, config)
    ids = []
    async with agent.client(server) as client:
        for _ in range(3):
            guid = await _delivered_mugshot(db, agent, client)
            response = await _upload(client, guid, PNG, "image/png")
            assert response.status_code == 200, response.text
            ids.append(response.json()["mugshot_id"])
    first = (await api.get(f"/api/v1/devices/{agent.device_id}/mugshots?limit=2")).json()
    assert [m["id"] for m in first["items"]] == ids[::-1][:2] and first["next_cursor"]
    page = f"/api/v1/devices/{agent.device_id}/mugshots?limit=2&cursor={first['next_cursor']}"
    rest = (await api.get(page)).json()
    assert [m["id"] for m in rest["items"]] == [ids[0]] and rest["next_cursor"] is None


async def test_bad_pictures_are_refused_and_change_nothing(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    other = await new_agent(db, config)
    async with other.client(server) as client:
        foreign = await _delivered_mugshot(db, other, client)
    async with agent.client(server) as client:
        guid = await _delivered_mugshot(db, agent, client)
        undelivered = await enqueue(db, agent.device_id, "Locate")
        before = await snapshot(db)
        cases = [
            (await _upload(client, guid, JPEG + bytes(5000)), 413, "payload_too_large"),
            (await _upload(client, guid, PNG, "image/jpeg"), 415, "unsupported_media_type"),
            (await _upload(client, guid, b"GIF89a" + bytes(100), "image/gif"), 415, "unsupported_media_type"),
            (await _upload(client, guid, b"\xff\xd8\xff", "image/jpeg"), 415, "unsupported_media_type"),
            (await _upload(client, foreign, JPEG), 409, "unknown_command"),
            (await _upload(client, undelivered, JPEG), 409, "unknown_command"),
            (await _upload(client, "6C5E0B5E-0000-4000-8000-000000000001", JPEG), 409, "unknown_command"),
            (await client.post("/kes/v1/mugshot?command_id=x", content=JPEG,
                               headers={"Content-Type": "image/jpeg"}), 400, "invalid_argument"),
        ]
        for response, status, code in cases:
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
        assert await snapshot(db) == before
        # A declared length above the limit is refused before the body is read.
        big = await _upload(client, guid, b"\xff\xd8\xff" + bytes(10_000))
        assert big.status_code == 413
    assert (await command(db, guid)).status == CommandStatus.PROCESSING
