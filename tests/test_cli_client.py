"""The CLI as an operator runs it: ``python -m mdm ...`` in a subprocess against a real server over
HTTPS, asserting what is printed and the exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import listener_url

from mdm.core import tokens
from mdm.db.models import Device, Group, Protocol, User
from mdm.testing import make_pki


class Cli:
    """Runs ``python -m mdm`` with the server's URL, a token and the data dir (for the CA)."""

    def __init__(self, url: str, token: str | None, data_dir: Path, home: Path) -> None:
        self.url, self.token, self.data_dir, self.home = url, token, data_dir, home

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
        env["HOME"] = str(self.home)
        env.update(extra)
        return env

    async def raw(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "mdm", *args],
            capture_output=True,
            text=True,
            env=env or self.env(),
            input=stdin,
            timeout=60,
        )

    async def __call__(
        self, *args: str, token: str | None = None, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        common = ["--url", self.url, "--data-dir", str(self.data_dir)]
        tok = token if token is not None else self.token
        if tok:
            common += ["--token", tok]
        return await self.raw(*args, *common, **kw)  # type: ignore[arg-type]

    async def ok(self, *args: str, **kw: object) -> str:
        r = await self(*args, **kw)
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
        return r.stdout

    async def json(self, *args: str, **kw: object) -> object:
        return json.loads(await self.ok(*args, "--json", **kw))


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("mdm: error: "), lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture
def cli(server, config, admin_token, tmp_path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(listener_url(server, "admin"), admin_token, config.data_path, home)


async def seed(db) -> dict[str, int]:
    """alice owns an iPad in Sales/EMEA (nested), bob a KES phone in Sales, plus an EAS device."""
    async with db.transaction() as session:
        alice, bob = User(name="alice"), User(name="bob")
        sales = Group(name="Sales")
        session.add_all([alice, bob, sales])
        await session.flush()
        emea = Group(name="EMEA", parent_id=sales.id)
        session.add(emea)
        await session.flush()
        ipad = Device(
            protocol=Protocol.IOS.value,
            identifier="UDID-IPAD",
            name="Alice iPad",
            model="iPad13,1",
            os_name="iPadOS",
            os_version="17.4",
            serial_number="SER-IPAD",
            user_id=alice.id,
            group_id=emea.id,
            inventory={},
            attributes={},
        )
        phone = Device(
            protocol=Protocol.KES.value,
            identifier="android-1",
            name="Bob Phone",
            model="Pixel 8",
            user_id=bob.id,
            group_id=sales.id,
            inventory={},
            attributes={},
        )
        eas = Device(
            protocol=Protocol.EAS.value,
            identifier="EASDEV1",
            name="Outlook",
            inventory={},
            attributes={},
            status="unmanaged",
        )
        session.add_all([ipad, phone, eas])
        await session.flush()
        return {"ipad": ipad.id, "phone": phone.id, "eas": eas.id, "sales": sales.id, "emea": emea.id}


async def test_devices_list_filters_table_and_json(cli: Cli, db) -> None:
    ids = await seed(db)
    out = await cli.ok("devices", "list")
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["ID", "PROTOCOL", "STATUS"]
    assert len(rows) == 3
    assert "Alice iPad" in out and "iPadOS 17.4" in out and "alice" in out
    page = await cli.json("devices", "list", "--protocol", "kes")
    assert [d["identifier"] for d in page["items"]] == ["android-1"]
    page = await cli.json("devices", "list", "--user", "alice")
    assert [d["id"] for d in page["items"]] == [ids["ipad"]]
    page = await cli.json("devices", "list", "--group", str(ids["sales"]))  # includes nested EMEA
    assert sorted(d["id"] for d in page["items"]) == sorted([ids["ipad"], ids["phone"]])
    page = await cli.json("devices", "list", "--status", "unmanaged")
    assert [d["id"] for d in page["items"]] == [ids["eas"]]
    page = await cli.json("devices", "list", "--q", "ser-ipad")
    assert [d["id"] for d in page["items"]] == [ids["ipad"]]
    # one page of two with a hint on stderr; --all-pages walks the cursor
    r = await cli("devices", "list", "--limit", "2")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
    assert "--cursor" in r.stderr and "--all-pages" in r.stderr
    page = await cli.json("devices", "list", "--limit", "1", "--all-pages")
    assert [d["id"] for d in page["items"]] == sorted(ids[k] for k in ("ipad", "phone", "eas"))
    r = await cli("devices", "list", "--status", "wiped")
    assert r.returncode == 0 and r.stdout == "" and "no devices match" in r.stderr
    # out-of-range page size: the server's 400, one line, exit 1
    r = await cli("devices", "list", "--limit", "0")
    assert r.returncode == 1
    assert one_error_line(r).startswith("mdm: error: 400 invalid_argument: invalid query: limit")


async def test_devices_show(cli: Cli, db) -> None:
    ids = await seed(db)
    out = await cli.ok("devices", "show", str(ids["ipad"]))
    assert "identifier:" in out and "UDID-IPAD" in out and "active commands: 0" in out
    detail = await cli.json("devices", "show", str(ids["ipad"]))
    assert detail["serial_number"] == "SER-IPAD" and detail["user"] == "alice"
    r = await cli("devices", "show", "987654")
    assert r.returncode == 1
    assert one_error_line(r) == "mdm: error: 404 not_found: no device 987654"
    r = await cli("devices", "show", "abc")
    assert r.returncode == 2 and "invalid int value" in r.stderr


async def test_command_send_conflict_log_and_recall(cli: Cli, db) -> None:
    ids = await seed(db)
    dev = str(ids["ipad"])
    out = await cli.ok(
        "command", "send", dev, "Block", "--arg", "message=lost, call 555", "--arg", "phone_number=555"
    )
    assert out.startswith(f"queued Block for device {dev}: ")
    guid = out.split(": ", 1)[1].split()[0]
    r = await cli("command", "send", dev, "Block")
    assert r.returncode == 1
    assert one_error_line(r).startswith(
        f"mdm: error: 409 conflict: device {dev} already has an active Block command ({guid})"
    )
    log = await cli.ok("command", "log", dev)
    lines = log.splitlines()
    assert lines[0].startswith(f"{guid}  Block  processing") and "message=lost, call 555" in lines[0]
    assert "processing" in lines[1] and "queued" in lines[1]
    out = await cli.ok("command", "recall", guid)
    assert out.startswith(f"{guid} (Block on device {dev}): removed")
    entries = (await cli.json("command", "log", dev))["items"]
    assert entries[0]["args"] == {"message": "lost, call 555", "phone_number": "555"}
    assert [j["status"] for j in entries[0]["journal"]] == ["processing", "removed"]
    r = await cli("command", "recall", guid)
    assert r.returncode == 1 and "409 conflict" in one_error_line(r) and "already removed" in r.stderr
    r = await cli("command", "send", dev, "Explode")
    assert r.returncode == 1 and one_error_line(r).startswith(
        "mdm: error: 400 invalid_argument: invalid body: type"
    )
    r = await cli("command", "send", str(ids["ipad"]), "Mugshot")
    assert r.returncode == 1
    assert one_error_line(r) == "mdm: error: 422 unsupported: Mugshot is not supported on ios devices"


async def test_command_send_argument_errors_are_usage_errors(cli: Cli, db) -> None:
    ids = await seed(db)
    dev = str(ids["ipad"])
    for args, needle in [
        (["command", "send", dev, "Block", "--arg", "novalue"], "expected KEY=VALUE"),
        (["command", "send", dev, "Block", "--arg", "x:={"], "not JSON"),
        (["command", "send", dev, "Block", "--args-json", "[1]"], "must be a JSON object"),
        (["command", "send", "Block"], "usage: mdm command send DEVICE_ID TYPE"),
        (["command", "send", "--all", dev, "Block"], "only the command TYPE"),
        (["command", "send", "--devices", "1,x", "Block"], "comma-separated"),
        (["command", "send", "--all", "--group", "1", "Block"], "not allowed with argument"),
    ]:
        r = await cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
    # --args-json first, then --arg on top; KEY:=JSON gives a typed value
    sent = await cli.json(
        "command",
        "send",
        dev,
        "Wipe",
        "--args-json",
        '{"preserve_data_plan": false}',
        "--arg",
        "preserve_data_plan:=true",
    )
    assert sent["args"] == {"preserve_data_plan": True}
    # the server's own argument checks come back as one line
    r = await cli("command", "send", dev, "Block", "--arg", "colour=red")
    assert r.returncode == 1 and one_error_line(r).startswith("mdm: error: 422 invalid_argument: Block: ")


async def test_bulk_send_reports_skipped(cli: Cli, db) -> None:
    ids = await seed(db)
    result = await cli.json("command", "send", "--all", "Mugshot")
    assert (result["state"], result["targeted"], result["queued"], result["skipped"]) == ("queued", 3, 1, 2)
    assert result["skipped_reasons"] == {
        "Mugshot is not supported on ios devices": 1, "Mugshot is not supported on eas devices": 1,
    }
    skipped = await cli.json("command", "bulk", str(result["id"]), "--skipped")
    assert {s["device"]: s["reason"] for s in skipped["items"]} == {
        ids["ipad"]: "Mugshot is not supported on ios devices",
        ids["eas"]: "Mugshot is not supported on eas devices",
    }
    # Not a terminal: progress lines on stderr, the final counts and reasons on stdout.
    r = await cli("command", "send", "--devices", f"{ids['ipad']},424242", "Block")
    assert r.returncode == 0, r.stderr
    assert "% of 2: queued 1, skipped 1" in r.stderr.splitlines()[-1]
    assert "queued" in r.stdout.splitlines()[0] and "targeted 2, queued 1, skipped 1" in r.stdout
    assert "no such device" in r.stdout
    result = await cli.json("command", "send", "--group", str(ids["sales"]), "RefreshDeviceInfo")
    assert (result["targeted"], result["queued"]) == (2, 2)
    r = await cli("command", "send", "--group", "999", "RefreshDeviceInfo")
    assert r.returncode == 1 and one_error_line(r) == "mdm: error: 404 not_found: no group 999"
    bulk_id = (await cli.ok("command", "send", "--all", "Wipe", "--no-wait")).strip()
    assert bulk_id.isdigit()
    out = await cli.ok("command", "bulk-recall", bulk_id)
    assert f"bulk operation {bulk_id} (Wipe to every device): recalled" in out
    shown = await cli.json("command", "bulk", bulk_id)
    assert shown["state"] == "recalled" and shown["recalled"] + shown["pending"] == shown["queued"]


async def test_a_long_bulk_recall_is_followed_to_its_end(cli: Cli, db, server) -> None:
    """DELETE /bulk/{id} answers 202 "recalling" past its budget; the CLI follows it and prints
    the final counts, as for a short recall."""
    from mdm.api.keys import BULK

    await seed(db)
    bulk_id = (await cli.ok("command", "send", "--all", "Wipe", "--no-wait")).strip()
    await cli.json("command", "bulk", bulk_id)
    service = server.ctx.services[BULK]
    service.batch_size, service.recall_seconds = 1, 0.0
    out = await cli.ok("command", "bulk-recall", bulk_id)
    assert f"bulk operation {bulk_id} (Wipe to every device): recalled" in out
    shown = await cli.json("command", "bulk", bulk_id)
    assert shown["state"] == "recalled" and shown["recalled"] + shown["pending"] == shown["queued"]


async def test_command_types(cli: Cli) -> None:
    out = await cli.ok("command", "types")
    assert out.splitlines()[0].split() == ["TYPE", "PROTOCOLS", "DESCRIPTION"]
    assert any(line.split()[:2] == ["Wipe", "eas,ios,kes"] for line in out.splitlines())
    names = {t["name"] for t in (await cli.json("command", "types"))["items"]}
    assert {"Block", "Wipe", "RefreshDeviceInfo", "Raw"} <= names


async def test_events_filters_and_follow(cli: Cli, db, api: httpx.AsyncClient) -> None:
    ids = await seed(db)
    await cli.ok("command", "send", str(ids["ipad"]), "Block")
    await cli.ok("command", "send", str(ids["phone"]), "Block")
    out = await cli.ok("events")
    # Leave out the server's start and the two sends' audit events.
    rows = [r for r in out.splitlines()[1:] if not {"service_started", "admin_action"} & set(r.split())]
    assert len(rows) == 2 and all("command_created" in r for r in rows)
    assert int(rows[0].split()[0]) < int(rows[1].split()[0])  # oldest first
    page = await cli.json("events", "--device", str(ids["phone"]))
    assert [e["device_id"] for e in page["items"]] == [ids["phone"]]
    assert (await cli.json("events", "--type", "device_deleted"))["items"] == []
    assert (await cli.json("events", "--severity", "critical"))["items"] == []
    r = await cli("events", "--severity", "loud")
    assert r.returncode == 2 and "invalid choice" in r.stderr

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mdm",
        "events",
        "--follow",
        "--json",
        "--interval",
        "0.2",
        "--type",
        "device_deleted",
        "--url",
        cli.url,
        "--token",
        cli.token or "",
        "--data-dir",
        str(cli.data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli.env(),
    )
    try:
        await asyncio.sleep(1.5)  # let it start and take its first look
        assert (await api.delete(f"/api/v1/devices/{ids['eas']}")).status_code == 204
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        event = json.loads(line)
        assert event["type"] == "device_deleted" and event["device_id"] == ids["eas"]
        assert event["body"]["identifier"] == "EASDEV1"
    finally:
        proc.terminate()
        await proc.wait()


async def test_tokens_create_list_revoke(cli: Cli, db) -> None:
    await seed(db)
    out = await cli.ok("tokens", "create", "ci-reader", "--scope", "devices:read", "--scope", "events:read")
    secret = next(w for w in out.split() if w.startswith("mdm_"))
    assert "shown once" in out
    listed = await cli.json("tokens", "list")
    reader = next(t for t in listed["items"] if t["name"] == "ci-reader")
    assert reader["scopes"] == ["devices:read", "events:read"] and reader["token"] is None
    assert secret not in await cli.ok("tokens", "list")
    assert (await cli("devices", "list", token=secret)).returncode == 0
    r = await cli("command", "send", "--all", "Block", token=secret)
    assert r.returncode == 1
    assert one_error_line(r) == "mdm: error: 403 forbidden: token 'ci-reader' lacks scope 'commands:write'"
    assert "revoked token 'ci-reader'" in await cli.ok("tokens", "revoke", "ci-reader")
    r = await cli("devices", "list", token=secret)
    assert r.returncode == 1
    assert one_error_line(r).startswith("mdm: error: 401 unauthenticated: invalid or revoked token")
    r = await cli("tokens", "create", "x", "--scope", "root")
    assert r.returncode == 1 and "scopes.0: Input should be 'admin', 'devices:read'" in one_error_line(r)
    r = await cli("tokens", "revoke", "nobody")
    assert r.returncode == 1 and one_error_line(r) == "mdm: error: 404 not_found: no token named 'nobody'"


async def test_login_verifies_and_stores_token_0600(cli: Cli, db) -> None:
    async with db.transaction() as session:
        _, narrow = await tokens.create(session, "narrow", ["events:read"])
    token_file = cli.home / ".config" / "mdm" / "token"
    r = await cli("login", token="mdm_abcdefgh_definitely-not-a-valid-token")
    assert r.returncode == 1 and "did not accept the token: 401" in one_error_line(r)
    assert not token_file.exists()
    out = await cli.ok("login", token=narrow)  # valid even though it lacks commands:read
    assert "stored in" in out and str(token_file) in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert token_file.read_text().strip() == narrow
    # later commands use the stored token (no --token): it may read events, not devices
    base = ["--url", cli.url, "--data-dir", str(cli.data_dir)]
    assert (await cli.raw("events", *base)).returncode == 0
    r = await cli.raw("devices", "list", *base)
    assert r.returncode == 1 and "403 forbidden" in one_error_line(r)
    # MDM_API_TOKEN wins over the file
    r = await cli.raw("devices", "list", *base, env=cli.env(MDM_API_TOKEN=cli.token or ""))
    assert r.returncode == 0, r.stderr
    # a group/world-readable token file is refused, with the fix
    token_file.chmod(0o644)
    r = await cli.raw("events", *base)
    assert r.returncode == 1
    assert one_error_line(r) == (
        f"mdm: error: token file {token_file} is accessible by group/others (mode 0644); "
        f"refusing to use it: run `chmod 600 {token_file}`"
    )
    # login from stdin (no --token on the command line, where `ps` would show it)
    token_file.unlink()
    r = await cli.raw("login", *base, stdin=narrow + "\n")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


async def test_connection_problems_each_have_their_message(
    cli: Cli, tmp_path: Path, unused_tcp_port: int
) -> None:
    base = ["--data-dir", str(cli.data_dir)]
    r = await cli.raw("devices", "list", "--url", cli.url, *base)
    assert r.returncode == 1
    assert one_error_line(r).startswith(
        "mdm: error: no API token: pass --token, set MDM_API_TOKEN, or run `mdm login"
    )
    r = await cli.raw(
        "devices", "list", "--url", f"https://127.0.0.1:{unused_tcp_port}", "--token", "x" * 30, *base
    )
    assert r.returncode == 1
    assert one_error_line(r).startswith(
        f"mdm: error: cannot connect to https://127.0.0.1:{unused_tcp_port}: connection refused"
    )
    # a data dir whose CA did not sign the server's certificate
    other = tmp_path / "other"
    make_pki(other)
    r = await cli.raw(
        "devices", "list", "--url", cli.url, "--token", cli.token or "", "--data-dir", str(other)
    )
    assert r.returncode == 1
    line = one_error_line(r)
    assert line.startswith(f"mdm: error: TLS verification of {cli.url} failed: ")
    assert str(other / "ca" / "root.pem") in line
    r = await cli.raw(
        "devices", "list", "--url", cli.url.replace("https", "http"), "--token", "x" * 30, *base
    )
    assert r.returncode == 1 and "does --url match the scheme" in one_error_line(r)
    r = await cli.raw("devices", "list", "--url", "ftp://x", "--token", "x" * 30, *base)
    assert r.returncode == 2 and "must start with https://" in one_error_line(r)


async def test_url_and_ca_from_client_section(cli: Cli, db, tmp_path: Path) -> None:
    ca_copy = tmp_path / "root-copy.pem"
    ca_copy.write_bytes((cli.data_dir / "ca" / "root.pem").read_bytes())
    data_dir = tmp_path / "client-only"
    data_dir.mkdir()
    (data_dir / "mdm.toml").write_text(f'[client]\nurl = "{cli.url}"\nca_file = "{ca_copy}"\n')
    r = await cli.raw("devices", "list", "--data-dir", str(data_dir), "--token", cli.token or "")
    assert r.returncode == 0, r.stderr
    (data_dir / "mdm.toml").write_text("[client]\nurl = 5\n")
    r = await cli.raw("devices", "list", "--data-dir", str(data_dir), "--token", cli.token or "")
    assert r.returncode == 2 and "client.url" in one_error_line(r)
