"""``/api/v1/policies`` over HTTPS on a real server: create, show, edit settings and locks, flags,
activation, profiles, device tags, desired vs applied; optimistic concurrency; wake-ups of the KES
devices of the group's subtree; every bad input refused with its code and nothing written."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.db.models import Device, Event, Group, Protocol
from mdm.policies.keys import SERVICE
from mdm.policies.seams import POLICIES
from mdm.policies.tables import Policy, PolicyProfile
from mdm.server.runtime import Server

P = "/api/v1/policies"


class Recorder:
    def __init__(self) -> None:
        self.woken: list[tuple[int, str]] = []
        self.calls: list[int] = []

    async def wake(self, device_id: int, reason: str) -> None:
        self.woken.append((device_id, reason))
        self.calls.append(1)

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        self.woken.extend((d, reason) for d in device_ids)
        self.calls.append(len(device_ids))

    async def wake_at(self, device_id: int, due: datetime, reason: str) -> None:
        raise AssertionError("not used")


async def tree(db: Database, kes_per_group: int = 3) -> dict[str, int]:
    """Corp > Sales > EMEA, Corp > IT; KES devices in each group, an iOS device in Sales."""
    async with db.transaction() as session:
        corp = Group(name="Corp")
        session.add(corp)
        await session.flush()
        sales, it = Group(name="Sales", parent_id=corp.id), Group(name="IT", parent_id=corp.id)
        session.add_all([sales, it])
        await session.flush()
        emea = Group(name="EMEA", parent_id=sales.id)
        session.add(emea)
        await session.flush()
        ids = {"corp": corp.id, "sales": sales.id, "it": it.id, "emea": emea.id}
        for name, gid in list(ids.items()):
            for i in range(kes_per_group):
                d = Device(protocol=Protocol.KES.value, identifier=f"{name}-{i}", group_id=gid, attributes={},
                           inventory={})
                session.add(d)
                await session.flush()
                ids[f"{name}{i}"] = d.id
        ios = Device(protocol=Protocol.IOS.value, identifier="ios-1", group_id=sales.id, attributes={},
                     inventory={})
        session.add(ios)
        await session.flush()
        ids["ios"] = ios.id
    return ids


async def rows(db: Database, table: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def event_types(db: Database) -> list[str]:
    async with db.session() as session:
        # not the start, not the audit of each request (tests/test_audit.py)
        stmt = select(Event.type).where(Event.type.notlike("service_%"), Event.type.notlike("admin_action%"))
        stmt = stmt.order_by(Event.id)
        return list((await session.scalars(stmt)).all())


def setting(value: Any, locked: bool = False) -> dict[str, Any]:
    return {"value": value, "locked": locked}


async def create(
    api: httpx.AsyncClient, group: int, settings: dict[str, Any], **flags: Any
) -> dict[str, Any]:
    body = {"group_id": group, "name": f"policy of {group}", "settings": settings, **flags}
    r = await api.post(P, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def desired(api: httpx.AsyncClient, device: int) -> dict[str, Any]:
    r = await api.get(f"{P}/devices/{device}")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_a_parent_lock_reaches_the_device_and_edits_follow(
    api: httpx.AsyncClient, server: Server, db: Database,
) -> None:
    ids = await tree(db)
    recorder = Recorder()
    server.ctx.pushers.unregister(Protocol.KES)
    server.ctx.pushers.register(Protocol.KES, recorder)
    waker = server.ctx.services[SERVICE].waker
    waker.batch = 5  # pages of 5 ids: 12 KES devices take 3 pages
    corp = await create(api, ids["corp"], {"password.min_length": setting(8, True),
                                           "camera.allowed": setting(True)})
    assert corp["revision"] == 1
    await waker.idle()
    # Every KES device of Corp and below is woken (not the iOS one), with the reason "policy".
    kes = {v for k, v in ids.items() if k[-1].isdigit()}
    assert {d for d, _ in recorder.woken} == kes and {r for _, r in recorder.woken} == {"policy"}
    assert recorder.calls == [5, 5, 2] and len(recorder.woken) == len(kes) == 12
    sales = await create(api, ids["sales"], {"password.min_length": setting(4),
                                             "camera.allowed": setting(False)})
    view = await desired(api, ids["emea0"])
    assert view["settings"] == {
        "camera.allowed": {"value": False, "locked": False, "source": f"policy:{sales['id']}"},
        "password.min_length": {"value": 8, "locked": True, "source": f"policy:{corp['id']}"},
    }
    assert [c["policy_id"] for c in view["contributors"]] == [corp["id"], sales["id"]]
    assert view["applied_version"] is None and not view["in_sync"]
    version = view["desired_version"]
    assert len(version) == 32
    # The KES sync reports it applied that version: desired == applied.
    resolver = server.ctx.services[POLICIES]
    async with db.transaction() as session:
        assert (await resolver.effective(session, ids["emea0"], ids["emea"])).version == version
        await resolver.record_applied(session, ids["emea0"], version)
    view = await desired(api, ids["emea0"])
    assert view["applied_version"] == version and view["in_sync"] and view["applied_at"]
    # Unlock the parent's setting: the child's 4 now applies, and the version moves on.
    recorder.woken.clear()
    r = await api.patch(f"{P}/{corp['id']}", json={"unlock": ["password.min_length"], "revision": 1})
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 2 and r.json()["settings"]["password.min_length"]["locked"] is False
    view = await desired(api, ids["emea0"])
    assert view["settings"]["password.min_length"]["value"] == 4
    assert view["desired_version"] != version and not view["in_sync"]
    await waker.idle()
    assert {d for d, _ in recorder.woken} == kes
    # The child stops inheriting: only its own settings.
    r = await api.patch(f"{P}/{sales['id']}", json={"inherit": False, "set": {"wifi.ssid": setting("sales")}})
    assert r.status_code == 200
    assert set((await desired(api, ids["sales1"]))["settings"]) == {"camera.allowed", "password.min_length",
                                                                    "wifi.ssid"}
    r = await api.patch(f"{P}/{sales['id']}", json={"unset": ["password.min_length"]})
    assert set((await desired(api, ids["sales1"]))["settings"]) == {"camera.allowed", "wifi.ssid"}
    # ... unless the parent forces inheritance.
    r = await api.patch(f"{P}/{corp['id']}",
                        json={"force_inheritance": True, "lock": ["password.min_length"]})
    assert r.status_code == 200
    view = await desired(api, ids["sales1"])
    assert view["settings"]["password.min_length"] == {"value": 8, "locked": True,
                                                        "source": f"policy:{corp['id']}"}
    # An inactive parent is not inherited; a device of IT (no policy of its own) then gets nothing.
    r = await api.post(f"{P}/{corp['id']}/deactivate")
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await desired(api, ids["it0"]))["desired_version"] == ""
    assert "password.min_length" not in (await desired(api, ids["sales1"]))["settings"]
    r = await api.post(f"{P}/{corp['id']}/activate")
    assert (await desired(api, ids["it0"]))["settings"]["password.min_length"]["value"] == 8
    assert await event_types(db) == [
        "policy_created", "policy_created", "policy_updated", "policy_updated", "policy_updated",
        "policy_updated", "policy_deactivated", "policy_activated",
    ]


async def test_profiles_with_tags_and_device_tags(
    api: httpx.AsyncClient, server: Server, db: Database
) -> None:
    ids = await tree(db)
    policy = await create(api, ids["sales"], {"camera.allowed": setting(True)})
    r = await api.post(f"{P}/{policy['id']}/profiles", json={
        "name": "field", "priority": 5, "conditions": {"tags_any": ["field", "travel"]},
        "settings": {"camera.allowed": setting(False, True)},
    })
    assert r.status_code == 201, r.text
    profile_id = r.json()["id"]
    assert r.json()["conditions"] == {"tags_any": ["field", "travel"], "tags_all": [], "out_of_office": None}
    before = await desired(api, ids["sales0"])
    assert before["settings"]["camera.allowed"]["value"] is True
    r = await api.put(f"/api/v1/devices/{ids['sales0']}/tags", json={"tags": ["travel", "blue"]})
    assert r.status_code == 200 and r.json() == {"device_id": ids["sales0"], "tags": ["blue", "travel"]}
    assert (await api.get(f"/api/v1/devices/{ids['sales0']}/tags")).json()["tags"] == ["blue", "travel"]
    after = await desired(api, ids["sales0"])
    assert after["settings"]["camera.allowed"] == {"value": False, "locked": True,
                                                    "source": f"profile:{profile_id}/field"}
    assert after["desired_version"] != before["desired_version"]
    assert [c["kind"] for c in after["contributors"]] == ["policy", "profile"]
    # The sibling device without the tag keeps the policy's value.
    assert (await desired(api, ids["sales1"]))["desired_version"] == before["desired_version"]
    # The policy's revision counts profile changes too.
    assert (await api.get(f"{P}/{policy['id']}")).json()["revision"] == 2
    r = await api.patch(f"{P}/{policy['id']}/profiles/field", json={"active": False, "revision": 2})
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await desired(api, ids["sales0"]))["desired_version"] == before["desired_version"]
    r = await api.delete(f"{P}/{policy['id']}/profiles/field", headers={"If-Match": '"3"'})
    assert r.status_code == 204
    assert await rows(db, PolicyProfile) == 0


async def _state(db: Database) -> tuple[int, int, int, list[str]]:
    return await rows(db, Policy), await rows(db, PolicyProfile), await rows(db, Event), await event_types(db)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"group_id": 999_999, "name": "x"}, 404, "not_found"),
    ({"group_id": "{corp}", "name": "x", "settings": {"a": {"value": None}}}, 422, "invalid_setting"),
    ({"group_id": "{corp}", "name": "x", "settings": {"bad key": {"value": 1}}}, 400, "invalid_argument"),
    ({"group_id": "{corp}", "name": "x", "settings": {"a": {"value": "x" * 70_000}}}, 413,
     "document_too_large"),
    ({"group_id": "{corp}", "name": "x", "settings": {"a": {"value": [[[[[[[[[[1]]]]]]]]]]}}}, 422,
     "invalid_setting"),
    ({"group_id": "{corp}", "name": "x", "settings": {"a": 1}}, 400, "invalid_argument"),
    ({"group_id": "{corp}", "name": "x", "surprise": 1}, 400, "invalid_argument"),
    ({"group_id": "{corp}", "name": ""}, 400, "invalid_argument"),
])
async def test_bad_policies_are_refused_and_nothing_is_written(
    api: httpx.AsyncClient, db: Database, body: dict[str, Any], status: int, code: str,
) -> None:
    ids = await tree(db, kes_per_group=0)
    if body["group_id"] == "{corp}":
        body = {**body, "group_id": ids["corp"]}
    before = await _state(db)
    r = await api.post(P, json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert await _state(db) == before


async def test_conflicts_and_stale_revisions(api: httpx.AsyncClient, db: Database) -> None:
    ids = await tree(db, kes_per_group=0)
    policy = await create(api, ids["corp"], {"a": setting(1)})
    url = f"{P}/{policy['id']}"
    before = await _state(db)
    r = await api.post(P, json={"group_id": ids["corp"], "name": "second"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "policy_exists")
    refusals = [
        (api.patch(url, json={"set": {"a": setting(2)}, "revision": 7}), 409, "stale_revision"),
        (api.patch(url, json={"set": {"a": setting(2)}}, headers={"If-Match": '"7"'}), 409, "stale_revision"),
        (api.patch(url, json={"set": {"a": setting(2)}, "revision": 1}, headers={"If-Match": "2"}), 400,
         "invalid_if_match"),
        (api.patch(url, json={"set": {"a": setting(2)}}, headers={"If-Match": "*"}), 400, "invalid_if_match"),
        (api.post(f"{url}/deactivate", headers={"If-Match": "5"}), 409, "stale_revision"),
        (api.delete(url, headers={"If-Match": "5"}), 409, "stale_revision"),
        (api.patch(url, json={"unset": ["nope"]}), 422, "unknown_setting"),
        (api.patch(url, json={"lock": ["nope"]}), 422, "unknown_setting"),
        (api.patch(url, json={"set": {"a": setting(2)}, "unset": ["a"]}), 422, "conflicting_change"),
        (api.patch(url, json={"settings": {}, "set": {"b": setting(2)}}), 422, "conflicting_change"),
        (api.patch(f"{P}/424242", json={"set": {"a": setting(2)}}), 404, "not_found"),
        (api.post(f"{url}/profiles", json={"name": "n", "conditions": {"out_of_office": {
            "timezone": "Nowhere/City",
            "office_hours": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}}}),
         422, "invalid_timezone"),
        (api.post(f"{url}/profiles", json={"name": "n", "conditions": {"out_of_office": {
            "timezone": "UTC", "office_hours": [{"days": ["mon"], "start": "17:00", "end": "09:00"}]}}}),
         422, "invalid_schedule"),
        (api.post(f"{url}/profiles", json={"name": "n", "conditions": {"tags_any": ["bad tag"]}}), 400,
         "invalid_argument"),
        (api.post(f"{url}/profiles", json={"name": "bad name"}), 400, "invalid_argument"),
        (api.post(f"{url}/profiles", json={"name": "n", "revision": 9}), 409, "stale_revision"),
        (api.patch(f"{url}/profiles/none", json={"active": False}), 404, "not_found"),
    ]
    for call, status, code in refusals:
        r = await call
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert await _state(db) == before
    # The right revision passes, and moves it on.
    r = await api.patch(url, json={"set": {"a": setting(2)}}, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["revision"] == 2
    r = await api.post(f"{url}/profiles", json={"name": "n"})
    assert r.status_code == 201
    r = await api.post(f"{url}/profiles", json={"name": "n"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "profile_exists")
    # A change that changes nothing writes nothing.
    events = await rows(db, Event)
    r = await api.patch(url, json={"set": {"a": setting(2)}})
    assert r.status_code == 200 and r.json()["revision"] == 3 and await rows(db, Event) == events
    r = await api.delete(url, headers={"If-Match": "3"})
    assert r.status_code == 204
    assert await rows(db, Policy) == 0 and await rows(db, PolicyProfile) == 0
    assert (await event_types(db))[-1] == "policy_deleted"


async def test_device_tags_bad_input(api: httpx.AsyncClient, db: Database) -> None:
    ids = await tree(db, kes_per_group=1)
    url = f"/api/v1/devices/{ids['corp0']}/tags"
    for body, code in [({"tags": ["a b"]}, "invalid_argument"), ({"tags": ["x"] * 33}, "invalid_argument"),
                       ({"tags": "a"}, "invalid_argument"), ({"tags": [""]}, "invalid_argument")]:
        r = await api.put(url, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (400, code), r.text
    r = await api.put("/api/v1/devices/999999/tags", json={"tags": ["a"]})
    assert r.status_code == 404
    assert (await api.get("/api/v1/policies/devices/999999")).status_code == 404
    assert (await api.get(url)).json()["tags"] == []
    assert await event_types(db) == []
    # Same tags again: no event, no change.
    assert (await api.put(url, json={"tags": ["b", "a", "a"]})).json()["tags"] == ["a", "b"]
    assert (await api.put(url, json={"tags": ["a", "b"]})).status_code == 200
    assert await event_types(db) == ["device_tags_changed"]


async def test_reads_and_writes_need_their_scopes(api: httpx.AsyncClient, db: Database) -> None:
    from mdm.core import tokens

    ids = await tree(db, kes_per_group=1)
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["devices:read"])
        _, other = await tokens.create(session, "other", ["commands:read"])
    await create(api, ids["corp"], {"a": setting(1)})
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await api.get(P, headers=headers)).status_code == 200
    assert (await api.get(f"{P}/devices/{ids['corp0']}", headers=headers)).status_code == 200
    r = await api.post(P, json={"group_id": ids["it"], "name": "x"}, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    assert (await api.get(P, headers={"Authorization": f"Bearer {other}"})).status_code == 403
    assert (await api.get(P, headers={"Authorization": "Bearer nope"})).status_code == 401
    assert await rows(db, Policy) == 1


async def test_the_openapi_document_lists_the_routes(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/api/openapi.json")).json()
    for path in ("/api/v1/policies", "/api/v1/policies/{id}", "/api/v1/policies/{id}/profiles/{name}",
                 "/api/v1/policies/devices/{id}", "/api/v1/devices/{id}/tags"):
        assert path in doc["paths"], path
    assert "PolicyOut" in doc["components"]["schemas"]


async def test_concurrent_edits_with_one_revision_one_wins(api: httpx.AsyncClient, db: Database) -> None:
    import asyncio

    ids = await tree(db, kes_per_group=0)
    policy = await create(api, ids["corp"], {"a": setting(0)})
    answers = await asyncio.gather(*[
        api.patch(f"{P}/{policy['id']}", json={"set": {"a": setting(n + 1)}, "revision": 1}) for n in range(6)
    ])
    assert sorted(r.status_code for r in answers) == [200] + [409] * 5
    winner = next(r.json() for r in answers if r.status_code == 200)
    final = (await api.get(f"{P}/{policy['id']}")).json()
    assert final["revision"] == 2 and final["settings"]["a"] == winner["settings"]["a"]
    assert (await event_types(db)).count("policy_updated") == 1


async def test_a_policy_holds_a_bounded_number_of_profiles(api: httpx.AsyncClient, db: Database) -> None:
    from mdm.policies.documents import MAX_PROFILES

    ids = await tree(db, kes_per_group=0)
    policy = await create(api, ids["corp"], {})
    for n in range(MAX_PROFILES):
        assert (await api.post(f"{P}/{policy['id']}/profiles", json={"name": f"p{n}"})).status_code == 201
    r = await api.post(f"{P}/{policy['id']}/profiles", json={"name": "one-more"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "too_many_profiles")
    assert await rows(db, PolicyProfile) == MAX_PROFILES


async def test_deleting_a_group_takes_its_policy_along(api: httpx.AsyncClient, db: Database) -> None:
    ids = await tree(db, kes_per_group=0)
    async with db.transaction() as session:
        session.add(Device(protocol=Protocol.KES.value, identifier="x", group_id=ids["it"], attributes={},
                           inventory={}))
    await create(api, ids["emea"], {"a": setting(1)})
    await create(api, ids["it"], {"a": setting(1)})
    r = await api.delete(f"/api/v1/groups/{ids['emea']}")
    assert r.status_code == 204, r.text
    assert [p["group_id"] for p in (await api.get(P)).json()["items"]] == [ids["it"]]
    r = await api.delete(f"/api/v1/groups/{ids['it']}")  # still holds a device: refused, policy kept
    assert r.status_code == 409 and await rows(db, Policy) == 1


async def test_an_edit_on_another_replica_is_seen_within_a_second(server: Server, db: Database) -> None:
    """The server's worker reads the revision every half second: a policy made by another replica
    (a service with its own resolver, on the same database) reaches its cache without any sync."""
    import asyncio
    import time

    from mdm.core.push import Pushers
    from mdm.policies.resolver import CachedResolver
    from mdm.policies.seams import PolicySetting
    from mdm.policies.service import PolicyService
    from mdm.policies.service_devices import DeviceWaker

    ids = await tree(db, kes_per_group=1)
    mine = server.ctx.services[SERVICE].resolver
    async with db.session() as session:
        assert (await mine.effective(session, ids["corp0"], ids["corp"])).version == ""
    loads = mine.loads
    other = PolicyService(db, CachedResolver(), DeviceWaker(db, Pushers()))
    await other.create(ids["corp"], "corp", {"a": PolicySetting(1, True)})
    started = time.monotonic()
    while mine.loads == loads:
        assert time.monotonic() - started < 1.0, "the worker did not see the change within a second"
        await asyncio.sleep(0.02)
    async with db.session() as session:
        seen = await mine.effective(session, ids["corp0"], ids["corp"])
    assert seen.settings == {"a": PolicySetting(1, True)}
