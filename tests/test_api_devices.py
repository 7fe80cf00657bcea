"""Admin API devices over HTTPS: filters, cursor pagination, get, move, delete (with its event)."""

from __future__ import annotations

import httpx
import pytest

from mdm.db.models import Command, Device, Group, Protocol, User


async def make_fleet(db) -> dict[str, object]:
    """Groups Corp > Sales > EMEA and Corp > IT; users alice/bob; 30 devices spread over them."""
    async with db.transaction() as session:
        corp = Group(name="Corp")
        session.add(corp)
        await session.flush()
        sales, it = Group(name="Sales", parent_id=corp.id), Group(name="IT", parent_id=corp.id)
        session.add_all([sales, it])
        await session.flush()
        emea = Group(name="EMEA", parent_id=sales.id)
        alice, bob = User(name="alice"), User(name="bob")
        session.add_all([emea, alice, bob])
        await session.flush()
        groups = [None, corp.id, sales.id, it.id, emea.id]
        protocols = [Protocol.IOS, Protocol.KES, Protocol.EAS]
        statuses = ["ok", "ok", "wiped", "unmanaged", "remove_failed"]
        devices = []
        for i in range(30):
            d = Device(
                protocol=protocols[i % 3].value,
                identifier=f"ID-{i:03d}",
                name=f"device {i}",
                serial_number=f"SN{i:05d}",
                user_id=[None, alice.id, bob.id][i % 3 if i % 4 else 0],
                group_id=groups[i % 5],
                status=statuses[i % 5],
                inventory={},
                attributes={},
            )
            devices.append(d)
        session.add_all(devices)
        await session.flush()
        return {
            "devices": devices,
            "corp": corp.id,
            "sales": sales.id,
            "it": it.id,
            "emea": emea.id,
            "alice": alice.id,
            "bob": bob.id,
        }


async def all_pages(api: httpx.AsyncClient, **params: object) -> list[dict]:
    items: list[dict] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await api.get("/api/v1/devices", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= int(params.get("limit", 50))  # type: ignore[call-overload]
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def ids(items: list[dict]) -> list[int]:
    return [d["id"] for d in items]


async def test_filters(api: httpx.AsyncClient, db) -> None:
    fleet = await make_fleet(db)
    devices: list[Device] = fleet["devices"]  # type: ignore[assignment]

    def expect(pred) -> list[int]:
        return sorted(d.id for d in devices if pred(d))

    page = (await api.get("/api/v1/devices", params={"limit": 500})).json()
    assert ids(page["items"]) == sorted(d.id for d in devices) and page["next_cursor"] is None
    assert page["items"][0]["protocol"] == "ios" and page["items"][0]["identifier"] == "ID-000"

    for name, value in (("ios", 1), ("kes", 2), ("eas", 4)):
        got = ids(await all_pages(api, protocol=name, limit=500))
        assert got == expect(lambda d, v=value: d.protocol == v) and got
    for status in ("ok", "wiped", "unmanaged", "remove_failed", "removing"):
        assert ids(await all_pages(api, status=status)) == expect(lambda d, s=status: d.status == s)
    alice = await all_pages(api, user="alice")
    assert ids(alice) == expect(lambda d: d.user_id == fleet["alice"]) and alice
    assert all(d["user"] == "alice" for d in alice)
    assert await all_pages(api, user="nobody") == []
    # a group includes its subgroups, at any depth
    sub = {fleet["corp"], fleet["sales"], fleet["it"], fleet["emea"]}
    assert ids(await all_pages(api, group=fleet["corp"])) == expect(lambda d: d.group_id in sub)
    assert ids(await all_pages(api, group=fleet["sales"])) == expect(
        lambda d: d.group_id in {fleet["sales"], fleet["emea"]}
    )
    assert ids(await all_pages(api, group=fleet["emea"])) == expect(lambda d: d.group_id == fleet["emea"])
    # filters combine
    combined = ids(await all_pages(api, protocol="kes", group=fleet["corp"], status="ok"))
    assert combined == expect(lambda d: d.protocol == 2 and d.group_id in sub and d.status == "ok")
    # q: substring of name, serial or identifier, case-insensitive; LIKE wildcards are literal
    assert ids(await all_pages(api, q="sn0001")) == expect(lambda d: "SN0001" in d.serial_number)
    assert ids(await all_pages(api, q="id-02")) == expect(lambda d: d.identifier.startswith("ID-02"))
    assert await all_pages(api, q="%") == [] and await all_pages(api, q="_") == []


async def test_count_is_the_total_of_every_page_only_when_asked(api: httpx.AsyncClient, db) -> None:
    fleet = await make_fleet(db)
    plain = (await api.get("/api/v1/devices", params={"limit": 3})).json()
    assert plain["total"] is None
    for params in ({}, {"protocol": "kes"}, {"status": "ok", "protocol": "ios"},
                   {"group": fleet["corp"]}, {"user": "alice"}, {"q": "sn0001"}, {"user": "nobody"}):
        page = (await api.get("/api/v1/devices", params={**params, "limit": 2, "count": "true"})).json()
        assert page["total"] == len(await all_pages(api, **params)), params
        assert len(page["items"]) == min(2, page["total"])


async def test_a_search_is_counted_up_to_the_cap(api: httpx.AsyncClient, db, monkeypatch) -> None:
    from mdm.api import schemas

    await make_fleet(db)
    monkeypatch.setattr(schemas, "SEARCH_COUNT_CAP", 5)
    # "sn000" matches all 30 devices: more than the cap, and said so; "sn00002" one.
    page = (await api.get("/api/v1/devices", params={"q": "sn000", "count": "true", "limit": 2})).json()
    assert (page["total"], page["total_capped"], len(page["items"])) == (5, True, 2)
    page = (await api.get("/api/v1/devices", params={"q": "sn00002", "count": "true"})).json()
    assert (page["total"], page["total_capped"]) == (1, False)
    # Filters without a search are counted exactly, whatever the cap.
    page = (await api.get("/api/v1/devices", params={"protocol": "ios", "count": "true"})).json()
    assert (page["total"], page["total_capped"]) == (10, False)
    page = (await api.get("/api/v1/devices", params={"q": "sn000"})).json()
    assert page["total"] is None and page["total_capped"] is None


async def test_cursor_pagination_walks_every_device_once(api: httpx.AsyncClient, db) -> None:
    fleet = await make_fleet(db)
    expected = sorted(d.id for d in fleet["devices"])  # type: ignore[attr-defined]
    for limit in (1, 7, 30, 31):
        got = ids(await all_pages(api, limit=limit))
        assert got == expected, limit
    # filtered walk with a page boundary inside the filter
    assert len(await all_pages(api, protocol="ios", limit=3)) == 10
    # the cursor is stable under inserts and deletes between pages
    r = (await api.get("/api/v1/devices", params={"limit": 10})).json()
    first, cursor = ids(r["items"]), r["next_cursor"]
    assert cursor == str(first[-1])
    assert (await api.delete(f"/api/v1/devices/{first[0]}")).status_code == 204
    async with db.transaction() as session:
        session.add(Device(protocol=1, identifier="LATE", inventory={}, attributes={}))
    rest: list[int] = []
    while cursor:
        page = (await api.get("/api/v1/devices", params={"limit": 10, "cursor": cursor})).json()
        rest += ids(page["items"])
        cursor = page["next_cursor"]
    assert not set(first) & set(rest)
    assert sorted(first + rest) == sorted([*expected, rest[-1]])  # every old device once, plus the new one


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "1" * 40}, "cursor"),
        ({"protocol": "windows"}, "protocol"),
        ({"status": "lost"}, "status"),
        ({"group": 0}, "group"),
        ({"group": "x"}, "group"),
    ],
)
async def test_bad_query_is_400_naming_the_parameter(
    api: httpx.AsyncClient, params: dict, field: str
) -> None:
    r = await api.get("/api/v1/devices", params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_argument"
    assert error["message"].startswith(f"invalid query: {field}")
    assert error["details"]["fields"][0]["field"] == field


async def test_unknown_query_parameter_is_400(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/devices", params={"colour": "red"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["message"] == "unknown query parameter 'colour'"
    assert "protocol" in error["details"]["allowed"] and "limit" in error["details"]["allowed"]


async def test_unknown_group_filter_is_404(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/devices", params={"group": 424242})
    assert r.status_code == 404 and r.json()["error"]["message"] == "no group 424242"


async def test_get_device(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        user = User(name="carol")
        session.add(user)
        await session.flush()
        d = Device(
            protocol=2,
            identifier="android-77",
            name="Phone",
            model="Pixel",
            os_name="Android",
            os_version="14",
            user_id=user.id,
            inventory={"apps": {"refreshed_at": "2024-01-01T00:00:00Z", "items": [{"id": "com.x"}]}},
            attributes={"agent": "1.2"},
        )
        session.add(d)
        await session.flush()
        session.add(
            Command(
                guid="G-1",
                device_id=d.id,
                type="Locate",
                args={},
                payload={},
                status="processing",
                active=True,
            )
        )
        device_id = d.id
    r = await api.get(f"/api/v1/devices/{device_id}")
    assert r.status_code == 200
    body = r.json()
    assert body["protocol"] == "kes" and body["identifier"] == "android-77" and body["user"] == "carol"
    assert body["inventory"]["apps"]["items"] == [{"id": "com.x"}] and body["attributes"] == {"agent": "1.2"}
    assert body["active_commands"] == 1 and body["push_valid"] is False
    r = await api.get("/api/v1/devices/999999")
    assert r.status_code == 404 and r.json()["error"] == {
        "code": "not_found",
        "message": "no device 999999",
        "request_id": r.headers["X-Request-Id"],
    }
    for bad in ("abc", "-1", "1.5", "9" * 30, str(2**62 + 1)):
        r = await api.get(f"/api/v1/devices/{bad}")
        assert r.status_code == 400, bad
        assert (
            r.json()["error"]["message"] == f"path parameter id must be a positive integer (at most {2**62})"
        )
    assert (await api.get(f"/api/v1/devices/{2**62}")).status_code == 404  # the documented maximum


async def test_delete_device_emits_event_and_removes_commands(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        d = Device(protocol=1, identifier="UDID-DEL", inventory={}, attributes={})
        session.add(d)
        await session.flush()
        device_id = d.id
    assert (
        await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Block"})
    ).status_code == 201
    r = await api.delete(f"/api/v1/devices/{device_id}")
    assert r.status_code == 204 and r.content == b""
    assert (await api.get(f"/api/v1/devices/{device_id}")).status_code == 404
    assert (await api.get(f"/api/v1/devices/{device_id}/commands")).status_code == 404
    events = (await api.get("/api/v1/events", params={"type": "device_deleted"})).json()["items"]
    assert len(events) == 1
    assert events[0]["device_id"] == device_id and events[0]["severity"] == "warning"
    assert events[0]["body"] == {"identifier": "UDID-DEL", "protocol": "ios", "by": "test-admin"}
    async with db.session() as session:
        from sqlalchemy import func, select

        assert await session.scalar(select(func.count()).select_from(Command)) == 0
    r = await api.delete(f"/api/v1/devices/{device_id}")
    assert r.status_code == 404


async def test_move_device_to_group(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        g = Group(name="Field")
        d = Device(protocol=1, identifier="UDID-MOVE", inventory={}, attributes={})
        session.add_all([g, d])
        await session.flush()
        group_id, device_id = g.id, d.id
    r = await api.put(f"/api/v1/devices/{device_id}/group", json={"group_id": group_id})
    assert r.status_code == 200 and r.json()["group_id"] == group_id
    assert ids(await all_pages(api, group=group_id)) == [device_id]
    r = await api.put(f"/api/v1/devices/{device_id}/group", json={"group_id": 9999})
    assert r.status_code == 404 and r.json()["error"]["message"] == "no group 9999"
    r = await api.put(f"/api/v1/devices/{device_id}/group", json={"group_id": None})
    assert r.status_code == 200 and r.json()["group_id"] is None
    r = await api.put(f"/api/v1/devices/{device_id}/group", json={})
    assert r.status_code == 400 and "group_id" in r.json()["error"]["message"]
