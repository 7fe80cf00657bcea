"""``mdm command send|recall|log|types|bulk|bulk-recall``: commands through the admin API (bulk
operations in ``bulk_progress``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API, actions, leaf, list_page, more_hint, paging
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError, Subparsers


def register(sub: Subparsers) -> None:
    command = actions(sub, "command", "send, recall and inspect commands")
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
    wait = p.add_mutually_exclusive_group()
    wait.add_argument("--no-wait", action="store_true",
                      help="bulk: print the operation id and return (follow it with mdm command bulk ID)")
    wait.add_argument("--wait-delivery", action="store_true",
                      help="bulk: after queuing, wait until nothing of it is left queued or in flight")
    p = leaf(command, "bulk", command_bulk, "a bulk operation: its state and counts (--skipped: the devices)")
    p.add_argument("bulk_id", type=int, metavar="ID")
    p.add_argument("--skipped", action="store_true", help="list the skipped devices and why (paged)")
    paging(p, default=100)
    p = leaf(command, "bulk-recall", command_bulk_recall,
             "stop a bulk operation and recall its commands not yet delivered")
    p.add_argument("bulk_id", type=int, metavar="ID")
    p = leaf(command, "recall", command_recall, "recall a command that the device has not executed")
    p.add_argument("guid", metavar="GUID")
    p = leaf(command, "log", command_log, "command log of a device, each command with its journal")
    p.add_argument("device_id", type=int, metavar="DEVICE_ID")
    paging(p, default=20)
    p = leaf(command, "types", command_types, "the command library (--args: each type's arguments)")
    p.add_argument("--args", action="store_true",
                   help="each type's arguments: type, required or optional, an example")
    p.add_argument("type", nargs="?", metavar="TYPE", help="only this command type")


# ---- send ---------------------------------------------------------------------------------------
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
    from mdm.cli import bulk_progress

    return bulk_progress.send(client, args, target, args.target[0], cmd_args)


def command_bulk(args: argparse.Namespace, client: ApiClient) -> int:
    from mdm.cli import bulk_progress

    return bulk_progress.show(args, client)


def command_bulk_recall(args: argparse.Namespace, client: ApiClient) -> int:
    from mdm.cli import bulk_progress

    return bulk_progress.recall(args, client)


# ---- recall, log --------------------------------------------------------------------------------
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
    page = list_page(args, client, f"{API}/devices/{args.device_id}/commands", {})
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
    more_hint(page, "commands")
    return 0


# ---- types --------------------------------------------------------------------------------------
def command_types(args: argparse.Namespace, client: ApiClient) -> int:
    types = client.request("GET", f"{API}/command-types", params={"args": "true"} if args.args else None)
    if args.type:
        known = [t["name"] for t in types["items"]]
        types["items"] = [t for t in types["items"] if t["name"] == args.type]
        if not types["items"]:
            raise CliError(f"unknown command type {args.type!r}; known: {', '.join(known)}", exit_code=2)
    if args.json:
        output.emit_json(types)
        return 0
    if not args.args:
        output.table(types["items"], [
            ("TYPE", lambda t: t["name"]), ("PROTOCOLS", lambda t: t["protocols"]),
            ("DESCRIPTION", lambda t: t["description"]),
        ])
        return 0
    for i, t in enumerate(types["items"]):
        if i:
            print()
        print(f"{t['name']} ({','.join(t['protocols'])}): {t['description']}")
        schemas = t.get("args") or {}
        if not schemas:
            print("  arguments not described for these protocols yet")
        for protocol, schema in schemas.items():
            _print_arguments(protocol, schema, len(schemas) > 1 or protocol not in t["protocols"])
    return 0


def _print_arguments(protocol: str, schema: dict[str, Any], label: bool) -> None:
    indent = "  "
    if label:
        print(f"  on {protocol}:")
        indent = "    "
    note = " ".join(str(schema.get("description") or "").replace("``", "").split())
    if note:
        print(f"{indent}{note}")
    rows = argument_rows(schema)
    if not rows:
        print(f"{indent}(no arguments)")
    widths = [max([len(r[i]) for r in rows], default=0) for i in range(3)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        print(f"{indent}{'  '.join(cells)}  e.g. {row[3]}".rstrip())
        if row[4]:
            print(f"{indent}  {row[4]}")
    for example in schema.get("examples") or []:  # a whole command (free-form arguments)
        print(f"{indent}e.g. --args-json {_shell_quote(json.dumps(example))}")


def argument_rows(schema: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(name, type, required/optional, example as typed on the command line, description)."""
    required = set(schema.get("required") or [])
    defs = schema.get("$defs") or {}
    rows = []
    for name, prop in (schema.get("properties") or {}).items():
        example = (prop.get("examples") or [None])[0]
        rows.append((
            name,
            type_of(prop, defs),
            "required" if name in required else "optional",
            _as_arg(name, example),
            " ".join(str(prop.get("description") or "").split()),
        ))
    return rows


def _as_arg(name: str, example: Any) -> str:
    if example is None:
        return "-"
    if isinstance(example, str):
        return f"--arg {name}={_shell_quote(example)}"
    return f"--arg {name}:={_shell_quote(json.dumps(example))}"


def _shell_quote(text: str) -> str:
    safe = text and all(c.isalnum() or c in "-_.,:/@+" for c in text)
    return text if safe else "'" + text.replace("'", "'\\''") + "'"


def type_of(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON Schema property as a short human type: ``string (max 64)``, ``list of string``..."""
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if branches:
        return " or ".join(type_of(b, defs) for b in branches)
    if "$ref" in prop:
        ref = prop["$ref"].rsplit("/", 1)[-1]
        return f"object ({ref})" if ref in defs else "object"
    if "enum" in prop:
        return "one of " + "|".join(json.dumps(v) if not isinstance(v, str) else v for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items")
        return f"list of {type_of(items, defs)}" if isinstance(items, dict) and items else "list"
    if kind == "string" and prop.get("format") in ("binary", "base64"):
        return "base64 data"
    limits = []
    if "pattern" in prop:
        limits.append(f"matching {prop['pattern']}")
    if "maxLength" in prop:
        limits.append(f"max {prop['maxLength']}")
    for key, word in (("minimum", ">="), ("maximum", "<=")):
        if key in prop:
            limits.append(f"{word} {prop[key]}")
    names = {"string": "string", "integer": "integer", "number": "number", "boolean": "true|false",
             "object": "object"}
    text = names.get(str(kind), str(kind) if kind else "any")
    return f"{text} ({', '.join(limits)})" if limits else text
