"""Commands that talk to a running server through the admin API: ``login``, ``devices``,
``command``, ``events`` and ``tokens``. Readable tables by default, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from mdm.cli import output
from mdm.cli.client import ApiClient, error_line, server_options, settings_from, write_token_file
from mdm.cli.common import CliError
from mdm.cli.output import Column

API = "/api/v1"
Handler = Callable[[argparse.Namespace, ApiClient], int]


def register(sub: argparse._SubParsersAction) -> None:
    common = server_options()

    def leaf(parent: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=_runner(handler))
        return p

    login = sub.add_parser("login", parents=[common], help="verify an API token and store it for the CLI")
    login.set_defaults(func=run_login)

    devices = sub.add_parser("devices", help="list and show devices").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = leaf(devices, "list", devices_list, "list devices")
    p.add_argument("--protocol", choices=["ios", "kes", "eas"])
    p.add_argument("--status", choices=["ok", "wiped", "removing", "remove_failed", "unmanaged"])
    p.add_argument("--user", help="owner user name")
    p.add_argument("--group", type=int, metavar="ID", help="group id (includes its subgroups)")
    p.add_argument("--q", metavar="TEXT", help="substring of name, serial number or identifier")
    _paging(p)
    p = leaf(devices, "show", devices_show, "show one device with its inventory")
    p.add_argument("id", type=int, metavar="ID")

    command = sub.add_parser("command", help="send, recall and inspect commands").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = leaf(command, "send", command_send,
             "send a command to one device, or to many (--all/--group/--devices)")
    p.usage = (
        "mdm command send [options] DEVICE_ID TYPE\n"
        "       mdm command send [options] (--all | --group ID | --devices ID,ID,...) TYPE"
    )
    p.add_argument("target", nargs="+", metavar="DEVICE_ID TYPE",
                   help="device id and command type (only TYPE with --all/--group/--devices)")
    bulk = p.add_mutually_exclusive_group()
    bulk.add_argument("--all", action="store_true", help="every device")
    bulk.add_argument("--group", type=int, metavar="ID", help="every device in the group and its subgroups")
    bulk.add_argument("--devices", metavar="ID,ID,...", help="these device ids")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="command argument (string); KEY:=JSON for a typed value; repeatable")
    p.add_argument("--args-json", metavar="JSON", help="all arguments as one JSON object")
    p = leaf(command, "recall", command_recall, "recall a command that the device has not executed")
    p.add_argument("guid", metavar="GUID")
    p = leaf(command, "log", command_log, "command log of a device, each command with its journal")
    p.add_argument("device_id", type=int, metavar="DEVICE_ID")
    _paging(p, default=20)
    leaf(command, "types", command_types, "the command library")

    p = leaf(sub, "events", events_list, "list events (newest last); --follow to keep watching")
    p.add_argument("--type", help="event type, e.g. command_created")
    p.add_argument("--severity", choices=["info", "warning", "functional_failure", "critical"])
    p.add_argument("--device", type=int, metavar="ID")
    p.add_argument("--limit", type=int, default=50, help="how many recent events to show (1..500)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until interrupted")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow")

    tokens = sub.add_parser("tokens", help="manage API tokens (admin scope)").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    leaf(tokens, "list", tokens_list, "list API tokens")
    p = leaf(tokens, "create", tokens_create, "create a scoped token; its secret is shown once")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                   help="e.g. devices:read, commands:write, events:read, admin; repeatable")
    p = leaf(tokens, "revoke", tokens_revoke, "revoke a token (effective immediately)")
    p.add_argument("name", metavar="NAME")


def _paging(p: argparse.ArgumentParser, default: int = 50) -> None:
    p.add_argument("--limit", type=int, default=default, help="page size (1..500)")
    p.add_argument("--cursor", help="start at this cursor (next_cursor of the previous page)")
    p.add_argument("--all-pages", action="store_true", help="follow the cursor through every page")


def _runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with ApiClient(settings_from(args)) as client:
                return handler(args, client)
        except BrokenPipeError:
            # The reader (head, less) went away: stop quietly, as a Unix filter does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return run


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


def _list(args: argparse.Namespace, client: ApiClient, path: str, params: dict[str, Any]) -> dict[str, Any]:
    params = {**params, "limit": args.limit, "cursor": args.cursor}
    if not args.all_pages:
        page: dict[str, Any] = client.get(path, **params)
        return page
    items: list[Any] = []
    for page in client.pages(path, params):
        items.extend(page["items"])
    return {"items": items, "next_cursor": None}


def _more_hint(page: dict[str, Any], noun: str) -> None:
    if page.get("next_cursor"):
        output.note(f"more {noun}: --cursor {page['next_cursor']} for the next page, or --all-pages")


def devices_list(args: argparse.Namespace, client: ApiClient) -> int:
    page = _list(args, client, f"{API}/devices", {
        "protocol": args.protocol, "status": args.status, "user": args.user, "group": args.group, "q": args.q,
    })
    if args.json:
        output.emit_json(page)
        return 0
    if page["items"]:
        output.table(page["items"], DEVICE_COLUMNS)
    else:
        output.note("no devices match")
    _more_hint(page, "devices")
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


# ---- commands -----------------------------------------------------------------------------------
def parse_command_args(pairs: list[str], args_json: str | None) -> dict[str, Any]:
    """``--args-json`` first, then each ``--arg KEY=VALUE`` (string) or ``KEY:=JSON`` on top."""
    result: dict[str, Any] = {}
    if args_json:
        try:
            parsed = json.loads(args_json)
        except json.JSONDecodeError as exc:
            raise CliError(f"--args-json is not valid JSON: {exc}", exit_code=2) from None
        if not isinstance(parsed, dict):
            raise CliError("--args-json must be a JSON object, e.g. '{\"Message\": \"hi\"}'", exit_code=2)
        result.update(parsed)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or key == ":":
            raise CliError(f"--arg {pair!r}: expected KEY=VALUE or KEY:=JSON", exit_code=2)
        if key.endswith(":"):
            try:
                result[key[:-1]] = json.loads(value)
            except json.JSONDecodeError as exc:
                message = f"--arg {pair!r}: the value after := is not JSON ({exc})"
                raise CliError(message, exit_code=2) from None
        else:
            result[key] = value
    return result


def _bulk_target(args: argparse.Namespace) -> Any:
    if args.all:
        return "all"
    if args.group is not None:
        return {"group": args.group}
    if args.devices is not None:
        try:
            ids = [int(x) for x in args.devices.split(",") if x.strip()]
        except ValueError:
            message = f"--devices {args.devices!r}: expected comma-separated device ids"
            raise CliError(message, exit_code=2) from None
        if not ids:
            raise CliError("--devices: give at least one device id", exit_code=2)
        return ids
    return None


def command_send(args: argparse.Namespace, client: ApiClient) -> int:
    target = _bulk_target(args)
    cmd_args = parse_command_args(args.arg, args.args_json)
    if target is None:
        if len(args.target) != 2 or not args.target[0].isdigit():
            raise CliError("usage: mdm command send DEVICE_ID TYPE (or TYPE with --all/--group/--devices)",
                           exit_code=2)
        device_id, ctype = int(args.target[0]), args.target[1]
        c = client.post(f"{API}/devices/{device_id}/commands", {"type": ctype, "args": cmd_args})
        if args.json:
            output.emit_json(c)
        else:
            print(f"queued {c['type']} for device {c['device_id']}: {c['guid']} ({c['status']})")
            for j in c.get("journal") or []:
                print(f"  {output.when(j['at'])}  {j['status']}  {j['detail'] or ''}".rstrip())
        return 0
    if len(args.target) != 1:
        raise CliError("with --all/--group/--devices give only the command TYPE", exit_code=2)
    result = client.post(f"{API}/commands", {"devices": target, "type": args.target[0], "args": cmd_args})
    if args.json:
        output.emit_json(result)
        return 0
    print(f"queued {args.target[0]} for {len(result['created'])} device(s)")
    if result["created"] and len(result["created"]) <= 50:
        output.table(result["created"], [("DEVICE", lambda c: c["device_id"]), ("GUID", lambda c: c["guid"])])
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])} device(s):")
        output.table(result["skipped"], [("DEVICE", lambda x: x["device"]),
                                         ("REASON", lambda x: x["reason"])])
    return 0


def command_recall(args: argparse.Namespace, client: ApiClient) -> int:
    c = client.delete(f"{API}/commands/{args.guid}")
    if args.json:
        output.emit_json(c)
        return 0
    detail = (c.get("journal") or [{}])[-1].get("detail")
    explain = {
        "removed": "removed from the queue before delivery",
        "removing": "the device holds it; it is recalled if the device has not executed it",
    }.get(c["status"], detail or "")
    print(f"{c['guid']} ({c['type']} on device {c['device_id']}): {c['status']}: {explain}")
    return 0


def command_log(args: argparse.Namespace, client: ApiClient) -> int:
    page = _list(args, client, f"{API}/devices/{args.device_id}/commands", {})
    if args.json:
        output.emit_json(page)
        return 0
    if not page["items"]:
        output.note(f"device {args.device_id} has no commands")
    for c in page["items"]:
        result = f"  {c['result_info']}" if c.get("result_info") else ""
        print(f"{c['guid']}  {c['type']}  {c['status']}  created {output.when(c['created_at'])}"
              f" by {c['created_by'] or '-'}  args: {output.cell(c['args'])}{result}")
        for j in c.get("journal") or []:
            print(f"    {output.when(j['at'])}  {j['status']:<14} {j['detail'] or ''}".rstrip())
    _more_hint(page, "commands")
    return 0


def command_types(args: argparse.Namespace, client: ApiClient) -> int:
    types = client.get(f"{API}/command-types")
    if args.json:
        output.emit_json(types)
        return 0
    output.table(types["items"], [
        ("TYPE", lambda t: t["name"]), ("PROTOCOLS", lambda t: t["protocols"]),
        ("DESCRIPTION", lambda t: t["description"]),
    ])
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
    filters = {"type": args.type, "severity": args.severity, "device": args.device}
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
