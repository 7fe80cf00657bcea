"""Admin API commands over HTTPS: send, bulk, recall through its whole life cycle, the command log
with its journal, and the events each step writes."""

from __future__ import annotations

import re

import httpx
import pytest
from bulk_support import send_bulk
from event_rows import SERVER_OWN
from sqlalchemy import select

from mdm.core import commands
from mdm.core.library import LIBRARY
from mdm.db.models import CommandQueueEntry, Device, Group, Protocol

GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
KES_TYPES = sorted(name for name, c in LIBRARY.items() if Protocol.KES in c.protocols)
# The KES translator validates arguments (mdm/kes/commands.py): the ones the types below need.
KES_ARGS = {"DeleteApplication": {"package": "com.example.app"},
            "InstallApplication": {"url": "https://apps.example/a.apk", "sha256": "ab" * 32}}


async def device(
    db, protocol: Protocol = Protocol.KES, identifier: str = "dev", group_id: int | None = None
) -> int:
    async with db.transaction() as session:
        d = Device(
            protocol=protocol.value, identifier=identifier, group_id=group_id, inventory={}, attributes={}
        )
        session.add(d)
        await session.flush()
        return d.id


async def send(
    api: httpx.AsyncClient, device_id: int, type_: str, args: dict | None = None
) -> httpx.Response:
    return await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": type_, "args": args or {}})


async def events_of(api: httpx.AsyncClient, **params: object) -> list[dict]:
    r = await api.get("/api/v1/events", params={"limit": 500, **params})
    assert r.status_code == 200
    return [e for e in r.json()["items"] if e["type"] not in SERVER_OWN]


async def test_send_returns_the_command_with_its_journal(api: httpx.AsyncClient, db) -> None:
    dev = await device(db)
    r = await send(api, dev, "Alarm", {"duration_seconds": 3})
    assert r.status_code == 201, r.text
    c = r.json()
    assert GUID.match(c["guid"])
    assert (c["device_id"], c["type"], c["status"], c["created_by"]) == (
        dev,
        "Alarm",
        "processing",
        "test-admin",
    )
    assert c["args"] == {"duration_seconds": 3} and c["attempts"] == 0 and c["finished_at"] is None
    assert [j["status"] for j in c["journal"]] == ["processing"]
    r = await api.get(f"/api/v1/commands/{c['guid'].lower()}")
    assert r.status_code == 200 and r.json()["guid"] == c["guid"] and len(r.json()["journal"]) == 1
    created = await events_of(api, type="command_created")
    assert len(created) == 1
    assert created[0]["device_id"] == dev
    assert created[0]["body"] == {"command": c["guid"], "command_type": "Alarm", "created_by": "test-admin"}


async def test_one_active_command_per_type(api: httpx.AsyncClient, db) -> None:
    dev = await device(db)
    first = (await send(api, dev, "Block")).json()["guid"]
    r = await send(api, dev, "Block")
    assert r.status_code == 409
    assert r.json()["error"]["message"] == f"device {dev} already has an active Block command ({first})"
    assert r.json()["error"]["details"] == {"command": first}
    assert (await send(api, dev, "Locate")).status_code == 201  # another type is fine
    assert (await api.delete(f"/api/v1/commands/{first}")).status_code == 200
    assert (await send(api, dev, "Block")).status_code == 201  # free again after the recall


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"type": "Raw"}, "Raw: args must be an Apple command dictionary"),
        ({"type": "InstallConfProf", "args": {"x": 1}}, "unknown argument 'x'"),
    ],
)
async def test_arguments_a_command_refuses_are_422_as_in_bulk(
    api: httpx.AsyncClient, db, body: object, needle: str
) -> None:
    """Well-formed JSON that the document admits, refused by the command type: 422, as
    ``POST /commands`` answers for the same arguments, and nothing is queued."""
    dev = await device(db, Protocol.IOS)
    r = await api.post(f"/api/v1/devices/{dev}/commands", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_argument" and needle in r.json()["error"]["message"]
    assert await events_of(api) == []
    bulk = await api.post("/api/v1/commands", json={"devices": [dev], **body})  # type: ignore[dict-item]
    assert bulk.status_code == 422 and bulk.json()["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"type": "Explode"}, 400, "invalid body: type"),
        ({}, 400, "invalid body: type: Field required"),
        ({"type": "Block", "args": [1]}, 400, "invalid body: args"),
        ({"type": "Block", "extra": 1}, 400, "invalid body: extra: Extra inputs are not permitted"),
        ({"type": "Raw", "args": {"RequestType": "DeviceLock"}}, 422, "Raw is not supported on kes devices"),
        ([], 400, "invalid body"),
    ],
)
async def test_send_rejects_bad_requests(
    api: httpx.AsyncClient, db, body: object, status: int, needle: str
) -> None:
    dev = await device(db)
    r = await api.post(f"/api/v1/devices/{dev}/commands", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert await events_of(api) == []  # nothing half-written


async def test_send_to_unknown_device_is_404(api: httpx.AsyncClient) -> None:
    r = await send(api, 777, "Block")
    assert r.status_code == 404 and r.json()["error"]["message"] == "no device 777"


async def test_bulk_by_ids_reports_unknown_unsupported_and_conflicts(api: httpx.AsyncClient, db) -> None:
    ios = await device(db, Protocol.IOS, "ios-1")
    kes1, kes2 = await device(db, Protocol.KES, "kes-1"), await device(db, Protocol.KES, "kes-2")
    eas = await device(db, Protocol.EAS, "eas-1")
    await send(api, kes2, "Mugshot")
    op = await send_bulk(api, [ios, kes1, kes2, eas, 9999, kes1], "Mugshot")
    assert (op["state"], op["targeted"], op["queued"], op["skipped"]) == ("queued", 5, 1, 4)
    r = await api.get(f"/api/v1/devices/{kes1}/commands")
    assert [(c["type"], c["status"]) for c in r.json()["items"]] == [("Mugshot", "processing")]
    r = await api.get(f"/api/v1/bulk/{op['id']}/skipped")
    assert {s["device"]: s["reason"] for s in r.json()["items"]} == {
        ios: "Mugshot is not supported on ios devices",
        kes2: "already has an active Mugshot command",
        eas: "Mugshot is not supported on eas devices",
        9999: "no such device",
    }
    assert op["skipped_reasons"] == {
        "Mugshot is not supported on ios devices": 1, "already has an active Mugshot command": 1,
        "Mugshot is not supported on eas devices": 1, "no such device": 1,
    }
    created = await events_of(api, type="commands_created")
    assert [(e["body"]["count"], e["body"]["commands"][0][0]) for e in created] == [(1, kes1)]


async def test_bulk_all_and_group_with_subgroups(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        top = Group(name="top")
        session.add(top)
        await session.flush()
        child = Group(name="child", parent_id=top.id)
        other = Group(name="other")
        session.add_all([child, other])
        await session.flush()
        top_id, child_id, other_id = top.id, child.id, other.id
    a = await device(db, identifier="a", group_id=top_id)
    b = await device(db, identifier="b", group_id=child_id)
    c = await device(db, identifier="c", group_id=other_id)
    d = await device(db, identifier="d")
    op = await send_bulk(api, {"group": top_id}, "Alarm")
    assert (op["targeted"], op["queued"], op["skipped"]) == (2, 2, 0)
    assert op["target"] == {"kind": "group", "group": top_id}
    op = await send_bulk(api, "all", "Alarm", {"duration_seconds": 5})
    assert (op["targeted"], op["queued"], op["skipped"]) == (4, 2, 2)
    assert op["args"] == {"duration_seconds": 5}
    skipped = (await api.get(f"/api/v1/bulk/{op['id']}/skipped")).json()["items"]
    assert sorted(s["device"] for s in skipped) == [a, b]  # already have an active Alarm
    for dev in (c, d):
        log = (await api.get(f"/api/v1/devices/{dev}/commands")).json()["items"]
        assert [(x["type"], x["args"]) for x in log] == [("Alarm", {"duration_seconds": 5})]
    r = await api.post("/api/v1/commands", json={"devices": {"group": 4242}, "type": "Alarm"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "no group 4242"


@pytest.mark.parametrize(
    ("devices", "needle"),
    [
        ([], "at least one device id"),
        (list(range(1, 10002)), "at most 10000 ids"),
        ([0], "positive integers"),
        ("some", "devices"),
        ({"group": 0}, "devices.GroupTarget.group"),
        ({"grp": 1}, "devices"),
    ],
)
async def test_bulk_rejects_bad_targets(api: httpx.AsyncClient, devices: object, needle: str) -> None:
    r = await api.post("/api/v1/commands", json={"devices": devices, "type": "Block"})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


async def test_recall_before_delivery_removes_it(api: httpx.AsyncClient, db) -> None:
    dev = await device(db)
    guid = (await send(api, dev, "Wipe")).json()["guid"]
    r = await api.delete(f"/api/v1/commands/{guid}")
    assert r.status_code == 200
    c = r.json()
    assert c["status"] == "removed" and c["finished_at"] is not None
    assert [j["status"] for j in c["journal"]] == ["processing", "removed"]
    assert c["journal"][1]["detail"] == "recalled by test-admin before delivery"
    async with db.session() as session:
        assert (await session.scalars(select(CommandQueueEntry))).all() == []
    recalled = await events_of(api, type="command_recalled")
    assert [e["body"]["status"] for e in recalled] == ["removed"]
    r = await api.delete(f"/api/v1/commands/{guid}")
    assert r.status_code == 409
    assert r.json()["error"]["message"] == f"command {guid} is already removed; nothing to recall"


async def test_recall_in_flight_then_device_answers(api: httpx.AsyncClient, db) -> None:
    dev = await device(db)
    guid = (await send(api, dev, "Block")).json()["guid"]
    async with db.transaction() as session:  # what a protocol channel does when it hands the command out
        command_id = (await commands.get_by_guid(session, guid)).id
        await commands.delivered(session, await commands.claim(session, command_id))
    r = await api.delete(f"/api/v1/commands/{guid}")
    assert r.status_code == 200
    assert r.json()["status"] == "removing"
    assert r.json()["journal"][-1]["detail"] == "recall requested by test-admin; device holds it"
    again = await api.delete(f"/api/v1/commands/{guid}")  # idempotent while removing
    assert again.status_code == 200 and again.json()["status"] == "removing"
    assert len(again.json()["journal"]) == len(r.json()["journal"])
    async with db.session() as session:
        assert (
            await session.get(CommandQueueEntry, (await commands.get_by_guid(session, guid)).id)
        ) is not None
    async with db.transaction() as session:  # ... and the device executed it anyway
        await commands.complete(
            session, await commands.get_by_guid(session, guid), success=True, info="locked"
        )
    log = (await api.get(f"/api/v1/devices/{dev}/commands")).json()["items"]
    assert log[0]["guid"] == guid and log[0]["status"] == "remove_failed"
    assert [j["status"] for j in log[0]["journal"]] == [
        "processing",
        "delivered",
        "removing",
        "remove_failed",
    ]
    assert log[0]["attempts"] == 1 and log[0]["delivered_at"] is not None
    assert "before the recall reached it" in log[0]["result_info"]
    failed = await events_of(api, type="command_failed")
    assert (
        len(failed) == 1
        and failed[0]["severity"] == "warning"
        and failed[0]["body"]["status"] == "remove_failed"
    )
    r = await api.delete(f"/api/v1/commands/{guid}")
    assert r.status_code == 409
    assert (await send(api, dev, "Block")).status_code == 201


async def test_recall_unknown_command(api: httpx.AsyncClient) -> None:
    r = await api.delete("/api/v1/commands/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "no command 00000000-0000-0000-0000-000000000000"
    assert (await api.get("/api/v1/commands/nope")).status_code == 404


async def test_completed_command_is_final(api: httpx.AsyncClient, db) -> None:
    dev = await device(db)
    guid = (await send(api, dev, "RefreshDeviceInfo")).json()["guid"]
    async with db.transaction() as session:
        command = await commands.get_by_guid(session, guid)
        await commands.delivered(session, await commands.claim(session, command.id))
        await commands.complete(session, command, success=False, info="device said no")
    c = (await api.get(f"/api/v1/commands/{guid}")).json()
    assert (c["status"], c["result_info"]) == ("failed", "device said no")
    assert [j["status"] for j in c["journal"]] == ["processing", "delivered", "failed"]
    assert (await api.delete(f"/api/v1/commands/{guid}")).status_code == 409


async def test_command_log_pages_newest_first_each_with_journal(api: httpx.AsyncClient, db) -> None:
    dev = await device(db)
    other = await device(db, identifier="other")
    guids = []
    for type_ in KES_TYPES:
        r = await send(api, dev, type_, KES_ARGS.get(type_))
        assert r.status_code == 201, (type_, r.text)
        guids.append(r.json()["guid"])
    await send(api, other, "Block")
    assert (await api.delete(f"/api/v1/commands/{guids[0]}")).status_code == 200
    seen: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(f"/api/v1/devices/{dev}/commands", params=params)).json()
        assert len(page["items"]) <= 5
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [c["guid"] for c in seen] == list(reversed(guids))
    assert all(c["journal"] and c["journal"][0]["status"] == "processing" for c in seen)
    assert [j["status"] for j in seen[-1]["journal"]] == ["processing", "removed"]
    r = await api.get("/api/v1/devices/5555/commands")
    assert r.status_code == 404
    r = await api.get(f"/api/v1/devices/{dev}/commands", params={"limit": 1000})
    assert r.status_code == 400


async def test_command_types(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/command-types")
    assert r.status_code == 200
    items = {t["name"]: t for t in r.json()["items"]}
    assert set(items) == set(LIBRARY)
    assert items["Wipe"]["protocols"] == ["eas", "ios", "kes"]
    assert items["Mugshot"]["protocols"] == ["kes"] and items["Raw"]["protocols"] == ["ios"]
