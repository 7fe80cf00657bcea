"""Every administrator action is an audit event (``mdm.core.audit``): through the real admin API
over HTTPS (the change and its ``admin_action`` commit together; a failure of ours on its own; 403
as ``admin_action_denied``; GET, other refusals and 401 write nothing), the client address through
a trusted proxy only, and the local CLI (the OS user from ``local:<hostname>``). Never a secret in
a body."""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from cli_run import mdm_cli
from conftest import client_ssl_context, listener_url
from sqlalchemy import func, select

from mdm.api import plugin as api_plugin
from mdm.api.framework import ApiRouter
from mdm.config import CONFIG_FILE, Config
from mdm.config_sections import load as load_config
from mdm.core import tokens, users
from mdm.core.errors import Conflict
from mdm.db import audit_context
from mdm.db.engine import Database
from mdm.db.models import Event, User
from mdm.plugins import ADMIN_API, PLUGINS
from mdm.server.context import ctx_of
from mdm.server.runtime import Server, open_context
from mdm.testing import make_data_dir

AUDIT = ("admin_action", "admin_action_denied")
PROXY = "127.0.0.2"


@pytest.fixture
def config(tmp_path: Path, pki_template: Path, database_url: str) -> Config:
    """The test configuration, with 127.0.0.2 a trusted proxy of the admin listener."""
    made = make_data_dir(tmp_path / "data", pki_template, database_url)
    toml = made.data_path / CONFIG_FILE
    text = toml.read_text()
    admin = '[listeners.admin]\nbind = "127.0.0.1"\n'
    assert admin in text
    toml.write_text(text.replace(admin, admin + f'trusted_proxies = ["{PROXY}/32"]\n'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    loaded = load_config(made.data_path, env=env)
    assert loaded.listeners.admin.trusted_proxies == [f"{PROXY}/32"]
    return loaded


# A router of test routes that fail after their write, or write twice, to show the transaction
# rules through the real framework and database.
probe = ApiRouter()


@probe.route("POST", "/audit-probe/fail", summary="write, then fail", tag="test", scope="devices:write")
async def probe_fail(request: web.Request) -> None:
    async with ctx_of(request).db.transaction() as session:
        await users.create(session, "written-then-failed")
        raise RuntimeError("boom after the write")


@probe.route("POST", "/audit-probe/conflict", summary="write, then refuse", tag="test", scope="devices:write")
async def probe_conflict(request: web.Request) -> None:
    async with ctx_of(request).db.transaction() as session:
        await users.create(session, "written-then-refused")
        raise Conflict("refused after the write")


@probe.route("POST", "/audit-probe/twice", summary="two writing transactions", tag="test",
             scope="devices:write", status=201)
async def probe_twice(request: web.Request) -> dict[str, int]:
    db = ctx_of(request).db
    ids = []
    for name in ("first", "second"):
        async with db.transaction() as session:
            ids.append((await users.create(session, name)).id)
            audit_context.note(users=list(ids))  # before the commit: in the audit of the first only
    return {"count": len(ids)}


@pytest.fixture
async def server(config: Config) -> AsyncIterator[Server]:
    """The real server, its admin API with the probe routes added."""
    api = api_plugin.plugin(ApiRouter.combine(ADMIN_API, probe))
    plugins = tuple(api if p.name == "api" else p for p in PLUGINS)
    ctx = await open_context(config)
    srv = Server(ctx, plugins)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _client(server: Server, config: Config, token: str | None, local: str | None = None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(verify=client_ssl_context(config), local_address=local)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=listener_url(server, "admin"), transport=transport, headers=headers,
                             timeout=30)


async def _audits(db: Database) -> list[Event]:
    async with db.session() as session:
        return list(await session.scalars(select(Event).where(Event.type.in_(AUDIT)).order_by(Event.id)))


async def _count(db: Database, model: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _token_id(db: Database, name: str) -> int:
    from mdm.db.models import ApiToken

    async with db.session() as session:
        return int(await session.scalar(select(ApiToken.id).where(ApiToken.name == name)) or 0)


async def test_post_and_delete_each_write_one_audit_with_the_change(
    server: Server, api: httpx.AsyncClient, db: Database
) -> None:
    r = await api.post("/api/v1/users", json={"name": "alice", "email": "alice@example.com"})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    [created] = await _audits(db)
    body = created.body
    assert created.type == "admin_action" and created.severity == "info"
    assert body["actor"] == "test-admin" and body["token_id"] == await _token_id(db, "test-admin")
    assert body["via"] == "api" and body["operation"] == "create_user"
    assert body["method"] == "POST" and body["route"] == "/api/v1/users"
    assert body["target"] == {"name": "alice"}  # the e-mail address is not an identifier we keep
    assert body["source"] == "127.0.0.1" and "proxy" not in body
    assert body["outcome"] == "done" and body["request_id"] == r.headers["X-Request-Id"]

    r = await api.delete(f"/api/v1/users/{user_id}")
    assert r.status_code == 204, r.text
    audits = await _audits(db)
    assert len(audits) == 2
    deleted = audits[1].body
    assert deleted["operation"] == "delete_user" and deleted["route"] == "/api/v1/users/{id}"
    assert deleted["target"] == {"id": user_id} and deleted["outcome"] == "done"


async def test_reads_and_unauthenticated_requests_write_nothing(
    server: Server, api: httpx.AsyncClient, db: Database, config: Config
) -> None:
    for path in ("/api/v1/users", "/api/v1/devices", "/api/v1/events", "/api/v1/tokens"):
        r = await api.get(path)
        assert r.status_code == 200, (path, r.text)
    wrong_token = "mdm_00000000_nope"
    async with _client(server, config, None) as anonymous, _client(server, config, wrong_token) as wrong:
        for client in (anonymous, wrong):
            r = await client.post("/api/v1/users", json={"name": "mallory"})
            assert r.status_code == 401
            r = await client.delete("/api/v1/tokens/test-admin")
            assert r.status_code == 401
    assert await _audits(db) == []
    assert await _count(db, User) == 0


async def test_a_created_token_secret_never_reaches_an_event_and_403_is_denied(
    server: Server, api: httpx.AsyncClient, db: Database, config: Config
) -> None:
    r = await api.post("/api/v1/tokens", json={"name": "reader", "scopes": ["devices:read"]})
    assert r.status_code == 201, r.text
    secret = r.json()["token"]
    assert secret.startswith("mdm_")
    r = await api.post("/api/v1/users", json={"name": "bob"})
    user_id = r.json()["id"]
    async with _client(server, config, secret) as reader:
        assert (await reader.get(f"/api/v1/users/{user_id}")).status_code == 200
        r = await reader.delete(f"/api/v1/users/{user_id}")
        assert r.status_code == 403, r.text
    audits = await _audits(db)
    assert [(a.type, a.body.get("operation")) for a in audits] == [
        ("admin_action", "create_token"), ("admin_action", "create_user"),
        ("admin_action_denied", "delete_user"),
    ]
    assert audits[0].body["target"] == {"name": "reader", "scopes": ["devices:read"]}
    denied = audits[2]
    assert denied.severity == "warning"
    assert denied.body["actor"] == "reader" and denied.body["token_id"] == await _token_id(db, "reader")
    assert denied.body["required_scope"] == "devices:write" and denied.body["target"] == {"id": user_id}
    assert await _count(db, User) == 1  # nothing changed
    async with db.session() as session:
        every_body = json.dumps([e.body for e in await session.scalars(select(Event))])
    random_part = secret.split("_", 2)[2]  # mdm_<id>_<random>; the random part may itself hold "_"
    assert len(random_part) >= 20
    assert secret not in every_body and random_part not in every_body


async def test_refused_requests_write_nothing(server: Server, api: httpx.AsyncClient, db: Database) -> None:
    """Bad input, not found, conflict: a 4xx and a log line, no row (as for any bad input)."""
    r = await api.delete("/api/v1/users/999999")
    assert r.status_code == 404
    r = await api.post("/api/v1/users", json={"name": ""})
    assert r.status_code == 400
    r = await api.post("/api/v1/users", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert await _audits(db) == []
    assert await _count(db, User) == 0


async def test_a_request_that_fails_after_its_write_leaves_neither_change_nor_done_audit(
    server: Server, api: httpx.AsyncClient, db: Database
) -> None:
    r = await api.post("/api/v1/audit-probe/fail")
    assert r.status_code == 500
    r = await api.post("/api/v1/audit-probe/conflict")
    assert r.status_code == 409
    assert await _count(db, User) == 0
    audits = [a.body for a in await _audits(db)]
    # the rolled-back transactions took their audit rows with them; a failure of ours (500) is
    # recorded afterwards on its own, a refusal (409) is not
    assert [(a["operation"], a["outcome"], a["status"], a["error"]) for a in audits] == [
        ("probe_fail", "failed", 500, "internal"),
    ]


async def test_several_transactions_of_one_request_are_audited_once(
    server: Server, api: httpx.AsyncClient, db: Database
) -> None:
    r = await api.post("/api/v1/audit-probe/twice")
    assert r.status_code == 201, r.text
    assert await _count(db, User) == 2
    [audit] = await _audits(db)
    assert audit.body["outcome"] == "done" and audit.body["operation"] == "probe_twice"
    # noted before the first commit: the first user's id (the second came after the audit row)
    async with db.session() as session:
        first = await session.scalar(select(User.id).where(User.name == "first"))
    assert audit.body["target"] == {"users": [first]}


async def test_an_audit_that_cannot_be_written_stops_the_change(db: Database) -> None:
    def broken(session: Any, held: audit_context.PendingAudit) -> None:
        raise RuntimeError("the audit cannot be written")

    token = audit_context.PENDING.set(audit_context.PendingAudit(write=broken))
    try:
        with pytest.raises(RuntimeError, match="cannot be written"):
            async with db.transaction() as session:
                await users.create(session, "unaudited")
        async with db.transaction() as session:  # reads only: no audit asked
            assert await users.page(session, limit=10) == ([], None)
    finally:
        audit_context.PENDING.reset(token)
    assert await _count(db, User) == 0
    # once the request is answered, a task it started (context copied) no longer writes its audit
    token = audit_context.PENDING.set(audit_context.PendingAudit(write=broken, closed=True))
    try:
        async with db.transaction() as session:
            await users.create(session, "later")
    finally:
        audit_context.PENDING.reset(token)
    assert await _count(db, User) == 1


async def test_client_address_through_a_trusted_proxy_only(
    server: Server, db: Database, config: Config, admin_token: str
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    async with _client(server, config, admin_token, local=PROXY) as via_proxy:
        r = await via_proxy.post("/api/v1/users", json={"name": "p1"}, headers=forwarded)
        assert r.status_code == 201, r.text
        r = await via_proxy.post("/api/v1/users", json={"name": "p2"},
                                 headers={"Forwarded": 'for="[2001:db8::7]:4711";proto=https'})
        assert r.status_code == 201, r.text
        r = await via_proxy.post("/api/v1/users", json={"name": "p3"},
                                 headers={"Forwarded": "for=198.51.100.1", "X-Forwarded-For": "198.51.100.2"})
        assert r.status_code == 201, r.text  # the two headers disagree: neither is believed
    async with _client(server, config, admin_token) as direct:
        r = await direct.post("/api/v1/users", json={"name": "spoofed"}, headers=forwarded)
        assert r.status_code == 201, r.text
    sources = [(a.body["target"]["name"], a.body["source"], a.body.get("proxy")) for a in await _audits(db)]
    assert sources == [
        ("p1", "198.51.100.7", PROXY),
        ("p2", "2001:db8::7", PROXY),
        ("p3", PROXY, None),
        ("spoofed", "127.0.0.1", None),  # not a trusted proxy: its header is ignored
    ]


async def test_a_local_cli_action_is_audited_as_the_os_user(config: Config, db: Database) -> None:
    code, out, err = await mdm_cli(
        config, "tokens", "create", "--local", "rescue", "--scope", "admin", "--json"
    )
    assert code == 0, err
    secret = json.loads(out)["token"]
    [audit] = await _audits(db)
    assert audit.body == {
        "actor": getpass.getuser(), "via": "cli", "operation": "tokens create --local",
        "target": {"name": "rescue", "scopes": ["admin"]}, "source": f"local:{socket.gethostname()}",
        "outcome": "done",
    }
    async with db.session() as session:
        assert await tokens.authenticate(session, secret) is not None
        every_body = json.dumps([e.body for e in await session.scalars(select(Event))])
    assert secret not in every_body
    # refused locally (the name exists): nothing changed, nothing audited
    code, _, err = await mdm_cli(config, "tokens", "create", "--local", "rescue", "--scope", "admin")
    assert code == 1 and "already exists" in err
    assert len(await _audits(db)) == 1


async def test_a_local_file_change_is_audited_on_its_own(config: Config, db: Database) -> None:
    passphrase = "correct-horse-battery"
    code, out, err = await mdm_cli(
        config, "certs", "encrypt-keys", env_extra={"MDM_CA_PASSPHRASE": passphrase}
    )
    assert code == 0, err
    assert "2 key(s) encrypted" in out
    [audit] = await _audits(db)
    assert audit.body["operation"] == "certs encrypt-keys" and audit.body["target"] == {"keys": 2}
    assert audit.body["actor"] == getpass.getuser() and audit.body["via"] == "cli"
    assert passphrase not in json.dumps(audit.body)
    # nothing left to encrypt: nothing changed, nothing audited
    code, out, err = await mdm_cli(
        config, "certs", "encrypt-keys", env_extra={"MDM_CA_PASSPHRASE": passphrase}
    )
    assert code == 0 and "already encrypted" in out, err
    assert len(await _audits(db)) == 1


async def test_issue_and_revoke_keep_the_pkcs12_password_out(
    server: Server, api: httpx.AsyncClient, db: Database
) -> None:
    password = "Pkcs12-Password-Never-Logged"
    r = await api.post("/api/v1/certificates", json={
        "user": "carol", "type": "mobile", "p12_password": password, "create_user": True,
        "email": "carol@example.com",
    })
    assert r.status_code == 201, r.text
    issued = r.json()
    serial = issued["certificate"]["serial"]
    r = await api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "key_compromise"})
    assert r.status_code == 200, r.text
    audits = [a.body for a in await _audits(db)]
    assert [(a["operation"], a["outcome"], a["target"]) for a in audits] == [
        ("issue_certificate", "done", {"user": "carol", "type": "mobile"}),
        ("revoke_certificate", "done", {"serial": serial, "reason": "key_compromise"}),
    ]
    async with db.session() as session:
        every_body = json.dumps([e.body for e in await session.scalars(select(Event))])
    assert password not in every_body and issued["pkcs12"][:40] not in every_body
