"""Commands that talk to a running server through the admin API: ``login``, ``devices``,
``command`` (in ``commands_cmd``), ``events`` and ``tokens``. Readable tables by default,
``--json`` for scripts.

Building these parsers imports nothing heavy (no httpx, no configuration model, no server code):
``mdm devices --help`` must answer at once; a handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from mdm.cli import commands_cmd, output
from mdm.cli.api_cmd import API, actions, common, confirm, leaf, list_page, more_hint, paging, positive_id
from mdm.cli.client import ApiClient, error_line, settings_from, write_token_file
from mdm.cli.common import CliError, Subparsers
from mdm.cli.output import Column

SEVERITIES = ["info", "warning", "functional_failure", "critical"]  # least to most severe


def register(sub: Subparsers) -> None:
    login = sub.add_parser("login", parents=[common()], help="verify an API token and store it for the CLI")
    login.set_defaults(func=run_login)

    devices = actions(sub, "devices", "list, show, move and delete devices")
    p = leaf(devices, "list", devices_list, "list devices")
    p.add_argument("--protocol", choices=["ios", "kes", "eas"])
    p.add_argument("--status", choices=["ok", "wiped", "removing", "remove_failed", "unmanaged"])
    p.add_argument("--user", help="owner user name")
    p.add_argument("--group", type=int, metavar="ID", help="group id (includes its subgroups)")
    p.add_argument("--q", metavar="TEXT", help="substring of name, serial number or identifier")
    paging(p)
    p = leaf(devices, "show", devices_show, "show one device with its inventory")
    p.add_argument("id", type=int, metavar="ID")
    p = leaf(devices, "delete", devices_delete,
             "delete a device record (its commands and history go with it; it is not wiped)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = leaf(devices, "move", devices_move, "move a device to a group, or out of any (--group none)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--group", required=True, metavar="GROUP",
                   help="group id, path (Corp/Sales) or unique name; 'none' for no group")

    commands_cmd.register(sub)

    p = leaf(sub, "events", events_list, "list events (newest last); --follow to keep watching")
    p.add_argument("--type", help="event type, e.g. command_created")
    p.add_argument("--severity", choices=SEVERITIES,
                   help="this severity or worse (info < warning < functional_failure < critical)")
    p.add_argument("--device", type=int, metavar="ID")
    p.add_argument("--limit", type=int, default=50, help="how many recent events to show (1..500)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until interrupted")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow")

    tokens = actions(sub, "tokens", "manage API tokens (admin scope)")
    leaf(tokens, "list", tokens_list, "list API tokens")
    p = leaf(tokens, "create", tokens_create, "create a scoped token; its secret is shown once")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                   help="e.g. devices:read, commands:write, events:read, admin; repeatable")
    from mdm.cli.tokens_local import add_local_option  # light: the database is imported with --local only

    add_local_option(p)
    p = leaf(tokens, "revoke", tokens_revoke, "revoke a token (effective immediately)")
    p.add_argument("name", metavar="NAME")


# ---- login --------------------------------------------------------------------------------------
def run_login(args: argparse.Namespace) -> int:
    token = args.token
    if not token:
        if sys.stdin.isatty():
            token = getpass.getpass("API token: ")
        else:
            token = sys.stdin.readline()
    token = (token or "").strip()
    if not token:
        raise CliError("no token given: mdm login --token TOKEN", exit_code=2)
    args.token = token
    settings = settings_from(args)
    with ApiClient(settings) as client:
        # Any authenticated route tells a valid token (200, or 403 for a narrower scope) from a bad one.
        response = client.send("GET", f"{API}/command-types")
    if response.status_code not in (200, 403):
        raise CliError(f"the server did not accept the token: {error_line(response)}")
    write_token_file(settings.token_file, token)
    if args.json:
        output.emit_json({"url": settings.url, "token_file": str(settings.token_file)})
    else:
        print(f"token accepted by {settings.url}; stored in {settings.token_file} (mode 0600)")
    return 0


# ---- devices ------------------------------------------------------------------------------------
DEVICE_COLUMNS: list[Column] = [
    ("ID", lambda d: d["id"]),
    ("PROTOCOL", lambda d: d["protocol"]),
    ("STATUS", lambda d: d["status"]),
    ("NAME", lambda d: d["name"]),
    ("MODEL", lambda d: d["model"]),
    ("OS", lambda d: " ".join(x for x in (d["os_name"], d["os_version"]) if x)),
    ("SERIAL", lambda d: d["serial_number"]),
    ("USER", lambda d: d["user"]),
    ("GROUP", lambda d: d["group_id"]),
    ("LAST SEEN", lambda d: output.when(d["last_seen_at"])),
]


def devices_list(args: argparse.Namespace, client: ApiClient) -> int:
    page = list_page(args, client, f"{API}/devices", {
        "protocol": args.protocol, "status": args.status, "user": args.user, "group": args.group, "q": args.q,
    })
    if args.json:
        output.emit_json(page)
        return 0
    if page["items"]:
        output.table(page["items"], DEVICE_COLUMNS)
    else:
        output.note("no devices match")
    more_hint(page, "devices")
    return 0


def devices_show(args: argparse.Namespace, client: ApiClient) -> int:
    d = client.get(f"{API}/devices/{args.id}")
    if args.json:
        output.emit_json(d)
        return 0
    pairs: list[tuple[str, Any]] = [
        ("id", d["id"]), ("protocol", d["protocol"]), ("identifier", d["identifier"]),
        ("status", d["status"]), ("name", d["name"]), ("model", d["model"]),
        ("os", f"{d['os_name'] or ''} {d['os_version'] or ''}".strip()),
        ("build", d["build_version"]), ("serial number", d["serial_number"]), ("imei", d["imei"]),
        ("phone number", d["phone_number"]), ("user", d["user"]), ("group", d["group_id"]),
        ("enrolled", output.when(d["enrolled_at"])), ("last seen", output.when(d["last_seen_at"])),
        ("push", "valid" if d["push_valid"] else "no valid token"),
        ("certificate", f"{d['cert_serial']} (expires {output.when(d['cert_not_after'])})"
         if d["cert_serial"] else None),
        ("active commands", d["active_commands"]),
    ]
    for part, value in sorted((d.get("inventory") or {}).items()):
        refreshed = value.get("refreshed_at") if isinstance(value, dict) else None
        items = value.get("items") if isinstance(value, dict) else None
        size = f"{len(items)} items" if isinstance(items, list) else "present"
        pairs.append((f"inventory {part}", f"{size}, refreshed {output.when(refreshed)}"))
    output.fields(pairs)
    return 0


def devices_delete(args: argparse.Namespace, client: ApiClient) -> int:
    device_id = positive_id(args.id, "device")
    d = client.get(f"{API}/devices/{device_id}")
    what = ", ".join(str(x) for x in (d["name"], d["serial_number"], d["user"]) if x) or d["identifier"]
    confirm(f"Delete device {device_id} ({d['protocol']}: {what}) with its commands and history?", args.yes)
    client.delete(f"{API}/devices/{device_id}")
    if args.json:
        output.emit_json({"deleted": device_id})
    else:
        print(f"deleted device {device_id} ({what})")
    return 0


def devices_move(args: argparse.Namespace, client: ApiClient) -> int:
    from mdm.cli.users_groups import group_path, resolve_group

    device_id = positive_id(args.id, "device")
    group = None if args.group.lower() == "none" else resolve_group(client, args.group)
    d = client.put(f"{API}/devices/{device_id}/group", {"group_id": group["id"] if group else None})
    if args.json:
        output.emit_json(d)
    elif group is None:
        print(f"device {device_id} is in no group now")
    else:
        print(f"moved device {device_id} to group {group['id']} ({group_path(client, group)})")
    return 0


# ---- events -------------------------------------------------------------------------------------
EVENT_COLUMNS: list[Column] = [
    ("ID", lambda e: e["id"]),
    ("TIME", lambda e: output.when(e["created_at"])),
    ("SEVERITY", lambda e: e["severity"]),
    ("TYPE", lambda e: e["type"]),
    ("DEVICE", lambda e: e["device_id"]),
    ("DETAILS", lambda e: e["body"]),
]


def _event_line(e: dict[str, Any]) -> str:
    return (f"{e['id']}  {output.when(e['created_at'])}  {e['severity']:<8} {e['type']}  "
            f"device={e['device_id'] or '-'}  {output.cell(e['body'], limit=200)}")


def events_list(args: argparse.Namespace, client: ApiClient) -> int:
    filters = {"type": args.type, "min_severity": args.severity, "device": args.device}
    page = client.get(f"{API}/events", **filters, limit=args.limit)
    events = list(reversed(page["items"]))  # the API gives newest first; people read oldest first
    if not args.follow:
        if args.json:
            output.emit_json(page)
        elif events:
            output.table(events, EVENT_COLUMNS)
        else:
            output.note("no events match")
        return 0
    last = max((e["id"] for e in events), default=None)
    if last is None:  # nothing yet: start from the newest event of any kind
        newest = client.get(f"{API}/events", limit=1)["items"]
        last = newest[0]["id"] if newest else 0
    try:
        while True:
            for e in events:
                if args.json:
                    output.emit_json_line(e)
                else:
                    print(_event_line(e), flush=True)
            time.sleep(max(args.interval, 0.05))
            events = _events_after(client, filters, last)
            last = max([last, *(e["id"] for e in events)])
    except KeyboardInterrupt:
        return 0


def _events_after(client: ApiClient, filters: dict[str, Any], after: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in client.pages(f"{API}/events", {**filters, "after": after, "limit": 500}):
        items.extend(page["items"])
    return sorted(items, key=lambda e: int(e["id"]))


# ---- tokens -------------------------------------------------------------------------------------
def tokens_list(args: argparse.Namespace, client: ApiClient) -> int:
    result = client.get(f"{API}/tokens")
    if args.json:
        output.emit_json(result)
        return 0
    output.table(result["items"], [
        ("NAME", lambda t: t["name"]), ("SCOPES", lambda t: t["scopes"]),
        ("CREATED", lambda t: output.when(t["created_at"])),
        ("LAST USED", lambda t: output.when(t["last_used_at"])),
        ("REVOKED", lambda t: t["revoked"]),
    ])
    return 0


def tokens_create(args: argparse.Namespace, client: ApiClient) -> int:
    t = client.post(f"{API}/tokens", {"name": args.name, "scopes": args.scope})
    if args.json:
        output.emit_json(t)
        return 0
    print(f"created token {t['name']!r} with scopes {', '.join(t['scopes'])}; the secret is shown once:\n")
    print(f"    {t['token']}\n")
    return 0


def tokens_revoke(args: argparse.Namespace, client: ApiClient) -> int:
    t = client.delete(f"{API}/tokens/{args.name}")
    if args.json:
        output.emit_json(t)
        return 0
    print(f"revoked token {t['name']!r}")
    return 0
