"""Admin API over HTTPS: users, nested groups, tokens and scopes, events, health, metrics, and the
HTTP-level errors (content type, malformed JSON, body size, unknown route, wrong method)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from event_rows import outbox_row
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from mdm.core import tokens
from mdm.db.engine import Database
from mdm.db.models import ApiToken, Device, Event, Group, Severity


def err(r: httpx.Response) -> dict:
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    assert body["error"]["request_id"] == r.headers["X-Request-Id"]
    return body["error"]


async def token_with(db, name: str, *scopes: str) -> dict[str, str]:
    async with db.transaction() as session:
        _, secret = await tokens.create(session, name, list(scopes))
    return {"Authorization": f"Bearer {secret}"}


# ---- users --------------------------------------------------------------------------------------
async def test_users_crud(api: httpx.AsyncClient, db) -> None:
    r = await api.post(
        "/api/v1/users", json={"name": "alice", "email": "alice@example.com", "display_name": "Alice"}
    )
    assert r.status_code == 201
    alice = r.json()
    assert (alice["name"], alice["email"], alice["display_name"]) == ("alice", "alice@example.com", "Alice")
    r = await api.post("/api/v1/users", json={"name": "alice"})
    assert r.status_code == 409 and err(r)["message"] == "user 'alice' already exists"
    for bad in (
        {"name": ""},
        {"name": "a b"},
        {"name": "x" * 256},
        {"name": "bob", "email": "nope"},
        {},
        {"nm": "x"},
    ):
        r = await api.post("/api/v1/users", json=bad)
        assert r.status_code == 400, bad
        assert err(r)["code"] == "invalid_argument"
    assert (await api.get(f"/api/v1/users/{alice['id']}")).json() == alice
    names = [f"user{i:02d}" for i in range(7)]
    for name in names:
        assert (await api.post("/api/v1/users", json={"name": name})).status_code == 201
    seen, cursor = [], None
    while True:
        page = (
            await api.get("/api/v1/users", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        ).json()
        seen += [u["name"] for u in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["alice", *names]
    # deleting a user leaves its devices without an owner
    async with db.transaction() as session:
        session.add(Device(protocol=1, identifier="owned", user_id=alice["id"], inventory={}, attributes={}))
    assert (await api.delete(f"/api/v1/users/{alice['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/users/{alice['id']}")).status_code == 404
    assert (await api.delete(f"/api/v1/users/{alice['id']}")).status_code == 404
    devices = (await api.get("/api/v1/devices")).json()["items"]
    assert [(d["identifier"], d["user"]) for d in devices] == [("owned", None)]


# ---- groups -------------------------------------------------------------------------------------
async def test_nested_groups(api: httpx.AsyncClient, db) -> None:
    async def create(name: str, parent: int | None = None) -> httpx.Response:
        return await api.post("/api/v1/groups", json={"name": name, "parent_id": parent})

    corp = (await create("Corp")).json()
    sales = (await create("Sales", corp["id"])).json()
    emea = (await create("EMEA", sales["id"])).json()
    assert emea["parent_id"] == sales["id"]
    r = await create("Sales", corp["id"])
    assert r.status_code == 409 and err(r)["message"] == "group 'Sales' already exists there"
    assert (await create("Sales")).status_code == 201  # same name elsewhere is fine
    r = await create("Orphan", 4242)
    assert r.status_code == 404 and err(r)["message"] == "no parent group 4242"
    assert (await create("")).status_code == 400
    listed = (await api.get("/api/v1/groups")).json()["items"]
    assert [(g["name"], g["parent_id"]) for g in listed][:3] == [
        ("Corp", None),
        ("Sales", corp["id"]),
        ("EMEA", sales["id"]),
    ]
    # a group with subgroups or devices cannot go; an empty one can
    r = await api.delete(f"/api/v1/groups/{sales['id']}")
    assert (
        r.status_code == 409
        and err(r)["message"] == f"group {sales['id']} has subgroups; delete or move them first"
    )
    async with db.transaction() as session:
        d = Device(protocol=2, identifier="in-emea", group_id=emea["id"], inventory={}, attributes={})
        session.add(d)
        await session.flush()
        device_id = d.id
    r = await api.delete(f"/api/v1/groups/{emea['id']}")
    assert r.status_code == 409 and "still holds devices" in err(r)["message"]
    assert (await api.put(f"/api/v1/devices/{device_id}/group", json={"group_id": None})).status_code == 200
    assert (await api.delete(f"/api/v1/groups/{emea['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/groups/{sales['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/groups/{sales['id']}")).status_code == 404
    async with db.session() as session:
        assert sorted(g.name for g in (await session.scalars(select(Group))).all()) == ["Corp", "Sales"]


# ---- tokens and scopes --------------------------------------------------------------------------
async def test_tokens_create_list_revoke(api: httpx.AsyncClient, db) -> None:
    r = await api.post("/api/v1/tokens", json={"name": "ci", "scopes": ["devices:read", "events:read"]})
    assert r.status_code == 201
    created = r.json()
    secret = created["token"]
    assert secret.startswith("mdm_") and created["scopes"] == ["devices:read", "events:read"]
    async with db.session() as session:  # only a hash is stored
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
        assert secret.encode() not in row.secret_hash and secret not in row.prefix + row.scopes
    listed = (await api.get("/api/v1/tokens")).json()["items"]
    assert {t["name"] for t in listed} == {"test-admin", "ci"} and all(t["token"] is None for t in listed)
    assert (await api.post("/api/v1/tokens", json={"name": "ci", "scopes": ["admin"]})).status_code == 409
    r = await api.post("/api/v1/tokens", json={"name": "x", "scopes": ["root"]})
    assert r.status_code == 400 and "scopes.0: Input should be 'admin', 'devices:read'" in err(r)["message"]
    assert (await api.post("/api/v1/tokens", json={"name": "x", "scopes": []})).status_code == 400
    assert (
        await api.post("/api/v1/tokens", json={"name": "with space", "scopes": ["admin"]})
    ).status_code == 400

    auth = {"Authorization": f"Bearer {secret}"}
    for _ in range(3):  # warm the server's token cache
        assert (await api.get("/api/v1/devices", headers=auth)).status_code == 200
    listed = {t["name"]: t for t in (await api.get("/api/v1/tokens")).json()["items"]}
    assert listed["ci"]["last_used_at"] is not None and listed["test-admin"]["last_used_at"] is not None
    r = await api.delete("/api/v1/tokens/ci")
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = await api.get("/api/v1/devices", headers=auth)
    assert r.status_code == 401, "a revoked token must stop working at once"
    assert err(r)["message"] == "invalid or revoked token" and r.headers["WWW-Authenticate"].startswith(
        "Bearer"
    )
    assert (await api.delete("/api/v1/tokens/nope")).status_code == 404


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body", "allowed"),
    [
        (["devices:read"], "GET", "/api/v1/devices", None, True),
        (["devices:read"], "POST", "/api/v1/users", {"name": "u1"}, False),
        (["devices:write"], "POST", "/api/v1/users", {"name": "u2"}, True),
        (["devices:read"], "GET", "/api/v1/events", None, False),
        (["events:read"], "GET", "/api/v1/events", None, True),
        (["events:read"], "GET", "/api/v1/command-types", None, False),
        (["commands:read"], "GET", "/api/v1/command-types", None, True),
        (["commands:read"], "POST", "/api/v1/commands", {"devices": "all", "type": "Block"}, False),
        (["commands:write"], "POST", "/api/v1/commands", {"devices": "all", "type": "Block"}, True),
        (["devices:write", "commands:write", "events:read"], "GET", "/api/v1/tokens", None, False),
        (["admin"], "GET", "/api/v1/tokens", None, True),
    ],
)
async def test_scopes(api: httpx.AsyncClient, db, scopes, method, path, body, allowed) -> None:
    headers = await token_with(db, "scoped", *scopes)
    r = await api.request(method, path, json=body, headers=headers)
    if allowed:
        # A bulk command to an empty fleet gets past the scope check and is then refused (422).
        assert r.status_code < 300 or err(r)["code"] == "no_targets", r.text
    else:
        assert r.status_code == 403
        assert err(r)["code"] == "forbidden" and "lacks scope" in err(r)["message"]


async def test_authentication_failures(api: httpx.AsyncClient) -> None:
    for header in ("", "Bearer", "Basic dXNlcjpwYXNz", "Bearer mdm_00000000_nope", "Bearer " + "x" * 5000):
        r = await api.get("/api/v1/devices", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert err(r)["code"] == "unauthenticated"
    r = await api.get("/healthz", headers={"Authorization": ""})  # health needs no token
    assert r.status_code == 200


# ---- events -------------------------------------------------------------------------------------
async def test_events_filters_and_pagination(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        await session.execute(delete(Event))  # the server's own (service_started): only these rows
        for i in range(12):
            outbox_row(
                session,
                "tick" if i % 2 else "tock",
                Severity.CRITICAL if i == 5 else Severity.INFO,
                device_id=100 + i % 3,
                n=i,
            )
        old = outbox_row(session, "ancient", device_id=100, n=-1)
        await session.flush()
        old.created_at = datetime.now(UTC) - timedelta(days=30)
    everything = (await api.get("/api/v1/events", params={"limit": 500})).json()["items"]
    assert len(everything) == 13
    assert [e["id"] for e in everything] == sorted(
        (e["id"] for e in everything), reverse=True
    )  # newest first
    by_type = (await api.get("/api/v1/events", params={"type": "tick"})).json()["items"]
    assert sorted(e["body"]["n"] for e in by_type) == [1, 3, 5, 7, 9, 11]
    critical = (await api.get("/api/v1/events", params={"severity": "critical"})).json()["items"]
    assert [e["body"]["n"] for e in critical] == [5]
    dev = (await api.get("/api/v1/events", params={"device": 101})).json()["items"]
    assert sorted(e["body"]["n"] for e in dev) == [1, 4, 7, 10]
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert len((await api.get("/api/v1/events", params={"since": since})).json()["items"]) == 12
    naive = (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert (await api.get("/api/v1/events", params={"since": naive})).status_code == 200
    middle = everything[6]["id"]
    after = (await api.get("/api/v1/events", params={"after": middle})).json()["items"]
    assert [e["id"] for e in after] == [e["id"] for e in everything if e["id"] > middle]
    seen, cursor = [], None
    while True:
        page = (
            await api.get("/api/v1/events", params={"limit": 5, **({"cursor": cursor} if cursor else {})})
        ).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [e["id"] for e in everything]
    for bad in ({"severity": "loud"}, {"device": 0}, {"since": "yesterday"}, {"after": -1}, {"limit": 501}):
        r = await api.get("/api/v1/events", params=bad)
        assert r.status_code == 400, bad


# ---- HTTP-level errors --------------------------------------------------------------------------
async def test_wrong_content_type_is_415(api: httpx.AsyncClient) -> None:
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonp"):
        r = await api.post("/api/v1/users", content=b'{"name": "x"}', headers={"Content-Type": ctype})
        assert r.status_code == 415, ctype
        assert err(r)["message"] == f"expected Content-Type application/json, got {ctype}"
    r = await api.post("/api/v1/users", content=b'{"name": "x"}', headers={"Content-Type": ""})
    assert r.status_code == 415
    r = await api.post(
        "/api/v1/users", content=b'{"name": "x"}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 201


@pytest.mark.parametrize("raw", [b"{nope", b"", b'{"name": "x"', b"\xff\xfe", b"[" * 100000, b"NaN garbage"])
async def test_malformed_json_is_400(api: httpx.AsyncClient, raw: bytes) -> None:
    r = await api.post("/api/v1/users", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in err(r)["message"]


async def test_nul_characters_are_refused_on_every_engine(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/users", json={"name": "a\x00b"})
    assert r.status_code == 400 and err(r)["message"] == "body.name contains a NUL character (\\u0000)"
    r = await api.post("/api/v1/groups", json={"name": "ok", "x\x00": 1})
    assert r.status_code == 400 and "NUL" in err(r)["message"]
    r = await api.get("/api/v1/devices", params={"q": "\x00"})
    assert r.status_code == 400 and err(r)["message"] == "query parameter 'q' contains a NUL character"
    r = await api.delete("/api/v1/tokens/a%00b")
    assert r.status_code == 400 and "path parameter name" in err(r)["message"]
    assert (await api.get("/api/v1/users")).json()["items"] == []


@pytest.mark.parametrize("path", ["/api/v1/devices", "/api/v1/events", "/api/v1/users"])
async def test_cursor_beyond_64_bits_is_400(api: httpx.AsyncClient, path: str) -> None:
    r = await api.get(path, params={"cursor": "9" * 19})
    assert r.status_code == 400 and err(r)["message"].startswith("invalid query: cursor")
    assert (await api.get(path, params={"cursor": "9" * 18})).status_code == 200


async def test_non_ascii_digits_in_ids(api: httpx.AsyncClient) -> None:
    for raw in ("\u00b2", "\u0661\u0662", "\uff11"):
        r = await api.get(f"/api/v1/devices/{raw}")
        assert r.status_code == 400, raw


async def test_body_over_limit_is_413_json(api: httpx.AsyncClient, config) -> None:
    limit = config.limits.max_body_bytes
    body = b'{"name": "' + b"x" * (limit + 10) + b'"}'
    r = await api.post("/api/v1/users", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    e = err(r)
    assert e["code"] == "body_too_large" and str(limit) in e["message"]
    assert (await api.get("/api/v1/users")).json()["items"] == []


async def test_unknown_route_and_wrong_method_are_json(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/nothing-here")
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = await api.get("/")
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = await api.patch("/api/v1/devices")
    assert r.status_code == 405 and err(r)["code"] == "method_not_allowed"
    assert r.headers["Allow"] == "GET"
    r = await api.put("/api/v1/commands", json={})
    assert r.status_code == 405 and "POST" in r.headers["Allow"]


# ---- health and metrics -------------------------------------------------------------------------
async def test_health_and_readiness(api: httpx.AsyncClient, server, unused_tcp_port: int) -> None:
    r = await api.get("/healthz", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await api.get("/readyz", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json() == {"status": "ok", "checks": {"database": "ok"}}
    # the same server with its database gone
    real = server.ctx.db
    server.ctx.db = Database(f"postgresql+asyncpg://mdm:pw@127.0.0.1:{unused_tcp_port}/mdm")
    try:
        r = await api.get("/readyz")
        assert r.status_code == 503
        assert (
            r.json()["status"] == "unavailable"
            and "cannot reach the database" in r.json()["checks"]["database"]
        )
        assert "pw" not in r.text
        assert (await api.get("/healthz")).status_code == 200  # alive, just not ready
    finally:
        await server.ctx.db.close()
        server.ctx.db = real


async def test_metrics(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        session.add_all(
            [Device(protocol=1, identifier=f"m{i}", inventory={}, attributes={}) for i in range(3)]
        )
        session.add(Device(protocol=2, identifier="k", status="wiped", inventory={}, attributes={}))
        session.add(Event(uuid="e-1", type="x", severity="info", body={}))
    for _ in range(3):
        await api.get("/api/v1/devices")
    await api.get("/api/v1/devices/999999")
    # /metrics needs the metrics:read scope (tests/test_secrets_over_tls.py); the fixture's
    # token is an admin one, which implies it.
    assert (await api.get("/metrics", headers={"Authorization": ""})).status_code == 401
    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    requests = {
        (s.labels["listener"], s.labels["status"]): s.value
        for s in families["mdm_http_requests"].samples
        if s.name == "mdm_http_requests_total"
    }
    assert requests[("admin", "200")] >= 3 and requests[("admin", "404")] >= 1
    assert any(
        s.name == "mdm_http_request_seconds_bucket" for s in families["mdm_http_request_seconds"].samples
    )
    devices = {(s.labels["protocol"], s.labels["status"]): s.value for s in families["mdm_devices"].samples}
    assert devices[("ios", "ok")] == 3 and devices[("kes", "wiped")] == 1
    assert families["mdm_events_undelivered"].samples[0].value >= 1
    assert "mdm_command_queue_depth" in families


async def test_openapi_document_is_public(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/openapi.json", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")
