"""The CLI covers what the admin API does: users, groups (create, nest, move), devices (move,
delete), enrollment links, command types with their arguments, certificate revocation by serial
prefix, events of at least a severity, and a token name that exists. ``python -m mdm`` in a
subprocess against a real server over HTTPS; bad input gets one clear line and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import listener_url
from enroll_support import APNS_TOML
from event_rows import outbox_row
from sqlalchemy import func, select
from test_cli_client import Cli, one_error_line, seed

from mdm.db.models import Device, Event, Group, Severity, User
from mdm.pki.tables import IssuedCertificateRecord


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML  # enrollments need the push topic


@pytest.fixture
def cli(server: Any, config: Any, admin_token: str, tmp_path: Any) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(listener_url(server, "admin"), admin_token, config.data_path, home)


async def count(db: Any, model: Any, *where: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# ---- users --------------------------------------------------------------------------------------
async def test_users(cli: Cli, db: Any) -> None:
    out = await cli.ok("users", "create", "carol", "--email", "carol@example.com", "--full-name", "Carol C")
    assert out.startswith("created user 'carol' (id ")
    r = await cli("users", "create", "carol")
    assert r.returncode == 1
    assert one_error_line(r) == "mdm: error: 409 conflict: user 'carol' already exists"
    assert await count(db, User) == 1
    r = await cli("users", "create", "bad name")
    assert r.returncode == 1 and "400" in one_error_line(r)

    ids = await seed(db)  # alice owns the iPad
    listed = await cli.json("users", "list")
    assert [u["name"] for u in listed["items"]] == ["carol", "alice", "bob"]
    out = await cli.ok("users", "list")
    assert out.splitlines()[0].split() == ["ID", "NAME", "FULL", "NAME", "EMAIL", "CREATED"]
    assert "Carol C" in out and "carol@example.com" in out
    out = await cli.ok("users", "show", "alice")
    assert "name:      alice" in out and "devices:   1" in out and "SER-IPAD" in out
    shown = await cli.json("users", "show", f"#{listed['items'][0]['id']}")
    assert shown["name"] == "carol" and shown["devices"] == []
    r = await cli("users", "show", "nobody")
    assert r.returncode == 1 and "no user named 'nobody'" in one_error_line(r)

    # deleting asks; without a terminal it needs --yes, and nothing changes
    r = await cli("users", "delete", "alice")
    assert r.returncode == 2 and "pass --yes" in one_error_line(r)
    assert await count(db, User) == 3
    assert "deleted user 'alice'" in await cli.ok("users", "delete", "alice", "--yes")
    assert await count(db, User) == 2
    async with db.session() as session:  # the device stays, without owner
        assert (await session.get(Device, ids["ipad"])).user_id is None  # type: ignore[union-attr]


# ---- groups -------------------------------------------------------------------------------------
async def _tree(db: Any) -> dict[str, int | None]:
    async with db.session() as session:
        return {g.name + f"#{g.id}": g.parent_id for g in (await session.scalars(select(Group))).all()}


async def test_groups_nest_move_and_refuse(cli: Cli, db: Any) -> None:
    def gid(out: str) -> int:
        return int(out.split()[2])

    corp = gid(await cli.ok("groups", "create", "Corp"))
    sales = gid(await cli.ok("groups", "create", "Sales", "--parent", "Corp"))
    out = await cli.ok("groups", "create", "EMEA", "--parent", "Corp/Sales")
    assert out == f"created group {gid(out)} (Corp/Sales/EMEA)\n"
    emea = gid(out)
    it = gid(await cli.ok("groups", "create", "IT", "--parent", str(corp)))
    it_emea = gid(await cli.ok("groups", "create", "EMEA", "--parent", "IT"))
    tree = await cli.ok("groups", "list", "--tree")
    assert tree == (
        f"Corp  [{corp}]\n"
        f"├── IT  [{it}]\n"
        f"│   └── EMEA  [{it_emea}]\n"
        f"└── Sales  [{sales}]\n"
        f"    └── EMEA  [{emea}]\n"
    )
    listed = await cli.json("groups", "list")
    assert {g["path"] for g in listed["items"]} == {"Corp", "Corp/Sales", "Corp/Sales/EMEA", "Corp/IT",
                                                   "Corp/IT/EMEA"}
    before = await _tree(db)

    # an ambiguous name, a cycle, a missing group: one line each, nothing moved
    r = await cli("groups", "move", "EMEA", "--parent", "none")
    assert r.returncode == 1
    assert one_error_line(r) == (
        f"mdm: error: 2 groups are named 'EMEA': {emea} (Corp/Sales/EMEA), {it_emea} (Corp/IT/EMEA); "
        "give the id or the path"
    )
    r = await cli("groups", "move", "Corp", "--parent", "Corp/Sales/EMEA")
    assert r.returncode == 1
    assert one_error_line(r) == (
        f"mdm: error: 409 conflict: group {corp} cannot move under its descendant {emea}"
    )
    r = await cli("groups", "move", "Sales", "--parent", "Sales")
    assert r.returncode == 1 and one_error_line(r).endswith(f"group {sales} cannot move under itself")
    r = await cli("groups", "move", "Corp/IT/EMEA", "--parent", "Sales")
    assert r.returncode == 1 and "a group named 'EMEA' already exists in group" in one_error_line(r)
    r = await cli("groups", "move", "Nowhere", "--parent", "none")
    assert r.returncode == 1 and "no group named 'Nowhere'" in one_error_line(r)
    assert await _tree(db) == before and await count(db, Event, Event.type == "group_moved") == 0

    out = await cli.ok("groups", "move", "Corp/IT/EMEA", "--parent", "none")
    assert out == f"moved group {it_emea}: now EMEA\n"
    moved = await cli.json("groups", "move", "IT", "--parent", "Corp/Sales")
    assert moved["parent_id"] == sales
    assert f"└── IT  [{it}]" in await cli.ok("groups", "list", "--tree")
    r = await cli("groups", "delete", "Corp")
    assert r.returncode == 1 and "has subgroups" in one_error_line(r)
    # a name made of digits that is no group's id is a name
    year = gid(await cli.ok("groups", "create", "2024", "--parent", "Corp"))
    assert await cli.ok("groups", "move", "2024", "--parent", "none") == f"moved group {year}: now 2024\n"
    r = await cli("groups", "delete", "4242")
    assert r.returncode == 1 and one_error_line(r) == "mdm: error: no group 4242 (mdm groups list shows them)"
    assert "deleted group" in await cli.ok("groups", "delete", str(it_emea))


# ---- devices ------------------------------------------------------------------------------------
async def test_devices_move_and_delete(cli: Cli, db: Any) -> None:
    ids = await seed(db)  # groups Sales > EMEA; the iPad is in EMEA
    out = await cli.ok("devices", "move", str(ids["ipad"]), "--group", "Sales")
    assert out == f"moved device {ids['ipad']} to group {ids['sales']} (Sales)\n"
    assert (await cli.json("devices", "show", str(ids["ipad"])))["group_id"] == ids["sales"]
    assert "is in no group now" in await cli.ok("devices", "move", str(ids["ipad"]), "--group", "none")
    r = await cli("devices", "move", str(ids["ipad"]), "--group", "999")
    assert r.returncode == 1 and one_error_line(r) == "mdm: error: no group 999 (mdm groups list shows them)"
    r = await cli("devices", "move", "0", "--group", "Sales")
    assert r.returncode == 2 and "positive integer" in one_error_line(r)

    r = await cli("devices", "delete", str(ids["phone"]))
    assert r.returncode == 2 and "pass --yes" in one_error_line(r)
    assert await count(db, Device) == 3
    out = await cli.ok("devices", "delete", str(ids["phone"]), "--yes")
    assert out == f"deleted device {ids['phone']} (Bob Phone, bob)\n"
    assert await count(db, Device) == 2 and await count(db, Event, Event.type == "device_deleted") == 1
    r = await cli("devices", "delete", str(ids["phone"]), "--yes")
    assert r.returncode == 1 and one_error_line(r) == f"mdm: error: 404 not_found: no device {ids['phone']}"


# ---- enrollment links ---------------------------------------------------------------------------
async def test_enroll_links_list_and_revoke(cli: Cli, api: httpx.AsyncClient) -> None:
    made = []
    for user in ("alice", "bob"):
        r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": user})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    out = await cli.ok("enroll", "links", "list")
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["ID", "PLATFORM", "USER", "STATUS"]
    assert [r.split()[:4] for r in rows] == [[str(made[0]), "ios", "alice", "pending"],
                                            [str(made[1]), "ios", "bob", "pending"]]
    out = await cli.ok("enroll", "links", "revoke", str(made[0]))
    assert out == f"revoked enrollment link {made[0]} of alice (ios); it no longer works\n"
    r = await cli("enroll", "links", "revoke", str(made[0]))
    assert r.returncode == 1
    assert one_error_line(r).startswith(f"mdm: error: 409 conflict: enrollment {made[0]} is revoked")
    revoked = await cli.json("enroll", "links", "list", "--status", "revoked")
    assert [e["id"] for e in revoked["items"]] == [made[0]]
    bobs = await cli.json("enroll", "links", "list", "--user", "bob")
    assert [e["id"] for e in bobs["items"]] == [made[1]]
    r = await cli("enroll", "links", "list", "--status", "lost")
    assert r.returncode == 2 and "invalid choice" in r.stderr


# ---- command types ------------------------------------------------------------------------------
async def test_command_types_show_arguments_that_work(cli: Cli, db: Any) -> None:
    out = await cli.ok("command", "types", "--args")
    blocks = {b.splitlines()[0].split(" (")[0]: b for b in out.split("\n\n")}
    assert set(blocks) >= {"Block", "Wipe", "Raw", "Mugshot", "DeleteProvProf", "Unblock"}
    block = blocks["Block"].splitlines()
    assert block[0] == "Block (ios,kes): Lock the device"
    line = next(x for x in block if x.split()[0] == "message")
    assert line.split()[1:5] == ["string", "(max", "1000)", "optional"]
    assert "e.g. --arg message='This device belongs to ACME Corp: please call +1 555 0100'" in line
    pin = next(x for x in block if x.split()[0] == "pin")
    assert "matching ^[0-9]{6}$" in pin and "e.g. --arg pin=123456" in pin and "macOS only" in blocks["Block"]
    assert any(x.split()[:3] == ["uuid", "string", "(max"] and "required" in x
               for x in blocks["DeleteProvProf"].splitlines())
    assert "(no arguments)" in blocks["Unblock"]
    assert "--args-json '{\"RequestType\": \"DeviceInformation\"" in blocks["Raw"]
    assert blocks["Mugshot"].startswith("Mugshot (kes)") and "(no arguments)" in blocks["Mugshot"]  # KES only
    assert "(supervised); enable_lost_mode first puts it in lost mode" in blocks["Locate"]  # one line
    assert "InstallApplication" in blocks and "e.g. --arg configuration:=" in blocks["InstallApplication"]
    one = await cli.json("command", "types", "Block", "--args")
    assert [t["name"] for t in one["items"]] == ["Block"]
    assert "pin" in one["items"][0]["args"]["ios"]["properties"]
    r = await cli("command", "types", "Blokc")
    assert r.returncode == 2 and "unknown command type 'Blokc'" in one_error_line(r)

    # the examples as printed are accepted by the server
    ids = await seed(db)
    example = "This device belongs to ACME Corp: please call +1 555 0100"
    sent = await cli.json("command", "send", str(ids["ipad"]), "Block", "--arg", f"message={example}",
                          "--arg", "phone_number=+1 555 0100")
    assert sent["args"] == {"message": example, "phone_number": "+1 555 0100"}


# ---- certificates -------------------------------------------------------------------------------
async def test_certs_revoke_by_unique_prefix(cli: Cli, db: Any, api: httpx.AsyncClient) -> None:
    serials = []
    for user in ("alice", "bob"):
        r = await api.post("/api/v1/certificates", json={"user": user, "type": "mobile", "create_user": True,
                                                         "p12_password": "pw"})
        assert r.status_code == 201, r.text
        serials.append(r.json()["certificate"]["serial"])
    target = serials[0]
    async with db.transaction() as session:  # a certificate whose serial shares 8 digits with it
        stmt = select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == target)
        real = await session.scalar(stmt)
        assert real is not None
        twin = target[:8] + ("0" if target[8] != "0" else "1") + "f" * (len(target) - 9)
        session.add(IssuedCertificateRecord(
            serial=twin, type="mobile", subject="CN=twin", user_id=real.user_id, not_before=real.not_before,
            not_after=real.not_after, pem=real.pem,
        ))

    async def statuses() -> dict[str, str]:
        async with db.session() as session:
            rows = (await session.execute(select(IssuedCertificateRecord.serial,
                                                 IssuedCertificateRecord.status))).all()
        return {s: st for s, st in rows}

    before = await statuses()
    r = await cli("certs", "revoke", target[:8])
    assert r.returncode == 1
    line = one_error_line(r)
    assert line.startswith(f"mdm: error: serial prefix {target[:8]} is ambiguous, 2 certificates match: ")
    assert target in line and twin in line and line.endswith("give more digits (nothing was revoked)")
    r = await cli("certs", "revoke", target[:3])
    assert r.returncode == 2 and "too short: give at least 6 hex digits" in one_error_line(r)
    r = await cli("certs", "revoke", "abcdef0123")
    assert r.returncode == 1 and "no certificate has a serial starting with abcdef0123" in one_error_line(r)
    r = await cli("certs", "revoke", "xyz")
    assert r.returncode == 2 and "must be hexadecimal" in one_error_line(r)
    assert await statuses() == before and await count(db, Event, Event.type == "cert_revoked") == 0

    out = await cli.ok("certs", "revoke", target[:9], "--reason", "keyCompromise")
    assert out.startswith(f"revoked {target} (") and "reason key_compromise" in out
    after = await statuses()
    assert after[target] == "revoked" and after[twin] == "valid" and after[serials[1]] == "valid"
    # the whole serial still works, and a revoked one says so
    r = await cli("certs", "revoke", target)
    assert r.returncode == 1 and f"409 conflict: certificate {target} is already revoked" in one_error_line(r)
    out = await cli.ok("certs", "revoke", serials[1].upper())
    assert out.startswith(f"revoked {serials[1]} (")


# ---- events -------------------------------------------------------------------------------------
async def test_events_severity_means_at_least(cli: Cli, db: Any) -> None:
    async with db.transaction() as session:
        for severity in Severity:
            outbox_row(session, f"e_{severity.value}", severity)
    # (the server's own alerts, e.g. the expired APNs certificate of the test data, aside)
    page = await cli.json("events", "--severity", "warning")
    mine = [e for e in page["items"] if e["type"].startswith("e_")]
    assert sorted(e["severity"] for e in mine) == ["critical", "functional_failure", "warning"]
    page = await cli.json("events", "--severity", "critical")
    assert [e["type"] for e in page["items"] if e["type"].startswith("e_")] == ["e_critical"]
    page = await cli.json("events", "--severity", "info")
    assert len([e for e in page["items"] if e["type"].startswith("e_")]) == 4
    helped = " ".join((await cli.ok("events", "--help")).split())
    assert "this severity or worse (info < warning < functional_failure < critical)" in helped


# ---- tokens -------------------------------------------------------------------------------------
async def test_token_name_that_exists(cli: Cli, db: Any) -> None:
    out = await cli.ok("tokens", "create", "ci", "--scope", "devices:read")
    secret = next(w for w in out.split() if w.startswith("mdm_"))
    r = await cli("tokens", "create", "ci", "--scope", "admin")
    assert r.returncode == 1
    assert one_error_line(r) == "mdm: error: 409 conflict: a token named 'ci' already exists"
    listed = await cli.json("tokens", "list")
    ci = [t for t in listed["items"] if t["name"] == "ci"]
    assert len(ci) == 1 and ci[0]["scopes"] == ["devices:read"]  # unchanged: not widened to admin
    assert (await cli("devices", "list", token=secret)).returncode == 0
    assert [t["name"] for t in listed["items"]] == ["test-admin", "ci"]
