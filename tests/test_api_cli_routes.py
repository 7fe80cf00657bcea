"""Admin API additions the CLI relies on, over real HTTPS: moving a group (never into its own
subtree), users by name, events of at least a severity, command types with their argument schemas,
and enrollments listed by the status they show."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from enroll_support import APNS_TOML
from event_rows import outbox_row
from pydantic import ValidationError
from sqlalchemy import func, select, update

from mdm.core import tokens
from mdm.db.models import Event, Group, Severity, utcnow
from mdm.enroll.tables import Enrollment
from mdm.ios import command_args
from mdm.ios.commands import _BUILDERS


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


def err(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


async def _tree(db: Any) -> dict[str, int | None]:
    async with db.session() as session:
        rows = (await session.execute(select(Group.id, Group.name, Group.parent_id))).all()
    names = {r.id: r.name for r in rows}
    return {r.name: (names[r.parent_id] if r.parent_id else None) for r in rows}  # type: ignore[misc]


async def _event_count(db: Any, type_: str) -> int:
    async with db.session() as session:
        count = select(func.count()).select_from(Event).where(Event.type == type_)
        return int(await session.scalar(count) or 0)


# ---- groups -------------------------------------------------------------------------------------
async def test_move_group_refuses_cycles_and_changes_nothing(api: httpx.AsyncClient, db: Any) -> None:
    async def create(name: str, parent: int | None = None) -> int:
        r = await api.post("/api/v1/groups", json={"name": name, "parent_id": parent})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    corp = await create("Corp")
    sales = await create("Sales", corp)
    emea = await create("EMEA", sales)
    it = await create("IT", corp)
    other_emea = await create("EMEA", it)
    before = await _tree(db)

    async def move(group: int, parent: int | None) -> httpx.Response:
        return await api.put(f"/api/v1/groups/{group}/parent", json={"parent_id": parent})

    r = await move(sales, sales)
    assert r.status_code == 409 and err(r)["message"] == f"group {sales} cannot move under itself"
    r = await move(corp, emea)  # a grandchild
    assert r.status_code == 409
    assert err(r)["message"] == f"group {corp} cannot move under its descendant {emea}"
    r = await move(sales, emea)
    assert r.status_code == 409 and "descendant" in err(r)["message"]
    r = await move(other_emea, sales)  # Sales already has an EMEA
    assert r.status_code == 409
    assert err(r)["message"] == f"a group named 'EMEA' already exists in group {sales}"
    r = await move(sales, 4242)
    assert r.status_code == 404 and err(r)["message"] == "no parent group 4242"
    r = await move(4242, None)
    assert r.status_code == 404 and err(r)["message"] == "no group 4242"
    for bad in ({}, {"parent_id": 0}, {"parent_id": "x"}, {"parent_id": None, "name": "x"}):
        assert (await api.put(f"/api/v1/groups/{sales}/parent", json=bad)).status_code == 400, bad
    assert await _tree(db) == before and await _event_count(db, "group_moved") == 0

    # allowed: EMEA (with nothing below) up to the top level, Sales under IT, and back
    r = await move(emea, None)
    assert r.status_code == 200 and r.json()["parent_id"] is None and r.json()["name"] == "EMEA"
    r = await move(sales, it)
    assert r.status_code == 200 and r.json()["parent_id"] == it
    assert (await _tree(db))["Sales"] == "IT"
    r = await move(it, sales)  # IT is now Sales's parent: a cycle
    assert r.status_code == 409
    assert (await move(sales, it)).status_code == 200  # to where it is: no change, no event
    assert await _event_count(db, "group_moved") == 2
    async with db.session() as session:
        stmt = select(Event).where(Event.type == "group_moved").order_by(Event.id)
        moved = (await session.scalars(stmt)).all()
    assert moved[1].body == {"group": sales, "name": "Sales", "from_parent": corp, "to_parent": it,
                             "by": "test-admin"}
    # the subtree moved along: a bulk command to IT now reaches EMEA-under-IT and Sales
    r = await api.get("/api/v1/devices", params={"group": it})
    assert r.status_code == 200


async def test_move_group_needs_devices_write(api: httpx.AsyncClient, db: Any) -> None:
    r = await api.post("/api/v1/groups", json={"name": "G"})
    group = r.json()["id"]
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["devices:read"])
    r = await api.put(f"/api/v1/groups/{group}/parent", json={"parent_id": None},
                      headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403


# ---- users --------------------------------------------------------------------------------------
async def test_users_filtered_by_exact_name(api: httpx.AsyncClient) -> None:
    for name in ("alice", "alice2", "bob"):
        assert (await api.post("/api/v1/users", json={"name": name})).status_code == 201
    items = (await api.get("/api/v1/users", params={"name": "alice"})).json()["items"]
    assert [u["name"] for u in items] == ["alice"]
    assert (await api.get("/api/v1/users", params={"name": "nobody"})).json()["items"] == []
    assert len((await api.get("/api/v1/users")).json()["items"]) == 3
    assert (await api.get("/api/v1/users", params={"name": "x" * 256})).status_code == 400


# ---- events -------------------------------------------------------------------------------------
async def test_events_min_severity_is_at_least(api: httpx.AsyncClient, db: Any) -> None:
    async with db.transaction() as session:
        for severity in Severity:
            outbox_row(session, f"e_{severity.value}", severity)

    async def types(**params: str) -> list[str]:
        r = await api.get("/api/v1/events", params=params)
        assert r.status_code == 200, r.text
        # (the server's own alerts, e.g. the expired APNs certificate of the test data, aside)
        return sorted(e["type"] for e in r.json()["items"] if e["type"].startswith("e_"))

    assert await types(min_severity="info") == sorted(f"e_{s.value}" for s in Severity)
    assert await types(min_severity="warning") == ["e_critical", "e_functional_failure", "e_warning"]
    assert await types(min_severity="functional_failure") == ["e_critical", "e_functional_failure"]
    assert await types(min_severity="critical") == ["e_critical"]
    # severity keeps its meaning (exactly), and both combine
    assert await types(severity="warning") == ["e_warning"]
    assert await types(severity="info", min_severity="warning") == []
    r = await api.get("/api/v1/events", params={"min_severity": "loud"})
    assert r.status_code == 400


# ---- command types ------------------------------------------------------------------------------
async def test_command_types_with_argument_schemas(api: httpx.AsyncClient) -> None:
    plain = (await api.get("/api/v1/command-types")).json()["items"]
    assert all(t["args"] is None for t in plain)  # the small answer stays the default
    r = await api.get("/api/v1/command-types", params={"args": "true"})
    items = {t["name"]: t for t in r.json()["items"]}
    block = items["Block"]["args"]["ios"]
    assert set(block["properties"]) == {"message", "phone_number", "pin"} and "required" not in block
    assert block["properties"]["pin"]["examples"] == ["123456"]
    assert items["DeleteProvProf"]["args"]["ios"]["required"] == ["uuid"]
    assert items["Unblock"]["args"]["ios"]["properties"] == {}
    assert items["Raw"]["args"]["ios"]["required"] == ["RequestType"]
    assert items["Mugshot"]["args"]["kes"]["properties"] == {}  # KES only, no arguments
    assert items["InstallApplication"]["args"]["kes"]["required"] == ["url", "sha256"]
    assert (await api.get("/api/v1/command-types", params={"args": "maybe"})).status_code == 400


def test_every_ios_command_has_arguments_with_valid_examples() -> None:
    """Each builder's command has a model, and each field's example passes that field's validation
    (the examples are what `mdm command types --args` tells operators to type)."""
    assert set(command_args.BY_COMMAND) == set(_BUILDERS)
    checked = 0
    for name, model in command_args.BY_COMMAND.items():
        if model is None:
            continue
        required = {k: f.examples[0] for k, f in model.model_fields.items() if f.is_required() and f.examples}
        for field_name, info in model.model_fields.items():
            assert info.examples, f"{name}.{field_name} has no example"
            for example in info.examples:
                try:
                    model.model_validate({**required, field_name: example})
                except ValidationError as exc:
                    # only rules over the whole command ("exactly one of ...") may object
                    assert all(e["loc"] == () for e in exc.errors()), (name, field_name, exc)
                checked += 1
    assert checked > 30


# ---- enrollments --------------------------------------------------------------------------------
async def test_enrollments_filter_by_the_status_they_show(api: httpx.AsyncClient, db: Any) -> None:
    ids = []
    for _ in range(3):
        r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert (await api.delete(f"/api/v1/enrollments/{ids[2]}")).status_code == 200
    async with db.transaction() as session:  # past its expiry, not yet marked by the worker
        await session.execute(
            update(Enrollment)
            .where(Enrollment.id == ids[0])
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )

    async def listed(status: str) -> list[tuple[int, str]]:
        r = await api.get("/api/v1/enrollments", params={"status": status})
        assert r.status_code == 200, r.text
        return [(e["id"], e["status"]) for e in r.json()["items"]]

    assert await listed("pending") == [(ids[1], "pending")]
    assert await listed("expired") == [(ids[0], "expired")]
    assert await listed("revoked") == [(ids[2], "revoked")]
