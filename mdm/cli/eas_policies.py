"""``mdm eas policies``: ActiveSync mailbox policies in Exchange, through the admin API
(``/api/v1/eas/policies``; ``docs/eas.md``).

Settings are given as ``--set KEY=VALUE`` (repeatable), typed by the policy model: booleans as
``true``/``false``, numbers as numbers, ``unlimited`` (or ``null``) for no limit. Names may hold
any characters (they are sent URL-encoded, and reach Exchange as plain values).
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from mdm.cli import output
from mdm.cli.api_cmd import API, actions, confirm, leaf
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError

BASE = f"{API}/eas/policies"
# The settings of ``mdm.eas.records.PolicySettings`` and their kinds (the CLI's parsers import no
# pydantic; tests/test_eas_policies_cli.py checks that the two agree).
SETTINGS: dict[str, str] = {
    "password_required": "bool", "min_password_length": "int", "alphanumeric_password_required": "bool",
    "min_complex_characters": "int", "allow_simple_password": "bool", "inactivity_lock_seconds": "int",
    "wipe_after_failed_attempts": "int", "password_expiration_days": "int", "password_history": "int",
    "require_device_encryption": "bool", "require_storage_card_encryption": "bool",
    "camera_allowed": "bool", "storage_card_allowed": "bool", "allow_non_provisionable_devices": "bool",
}


def register(eas: Any) -> None:
    """Add ``mdm eas policies`` with list/show/create/edit/delete to the ``mdm eas`` group."""
    pol = actions(eas, "policies", "ActiveSync mailbox policies in Exchange")
    p = leaf(pol, "list", policies_list, "list the ActiveSync mailbox policies known from Exchange")
    p.add_argument("--include-vanished", action="store_true", help="also those Exchange no longer lists")
    p = leaf(pol, "show", policies_show, "show one policy and its settings")
    p.add_argument("name", metavar="NAME")
    keys = ", ".join(sorted(SETTINGS))
    for name, handler, text in (("create", policies_create, "create a policy in Exchange"),
                                ("edit", policies_edit, "change settings of a policy in Exchange")):
        p = leaf(pol, name, handler, text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                       help=f"a setting (repeatable); keys: {keys}")
    p = leaf(pol, "delete", policies_delete, "delete a policy from Exchange")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _url(name: str) -> str:
    return f"{BASE}/{quote(name, safe='')}"


def _value(field: str, text: str) -> Any:
    """The typed value of a setting from its text, by the model's field type."""
    lowered = text.strip().lower()
    if lowered in ("unlimited", "null", "none", ""):
        return None
    if SETTINGS[field] == "bool":
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise CliError(f"--set {field}: expected true or false, not {text!r}", exit_code=2)
    try:
        return int(lowered)
    except ValueError:
        raise CliError(f"--set {field}: expected a whole number or unlimited, not {text!r}",
                       exit_code=2) from None


def parse_settings(items: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CliError(f"--set {item!r}: expected KEY=VALUE", exit_code=2)
        if key not in SETTINGS:
            known = ", ".join(sorted(SETTINGS))
            raise CliError(f"--set {key}: unknown setting; known: {known}", exit_code=2)
        settings[key] = _value(key, text)
    return settings


def _print(policy: dict[str, Any]) -> None:
    vanished = policy.get("vanished_at")
    output.fields([("name", policy["name"]), ("identity", policy["identity"]),
                   ("default", "yes" if policy["is_default"] else "no"),
                   ("seen", output.when(policy["seen_at"])),
                   *([("vanished", output.when(vanished))] if vanished else [])])
    for key, value in sorted(policy["settings"].items()):
        print(f"  {key} = {'unlimited' if value is None else output.cell(value)}")


def policies_list(args: argparse.Namespace, client: ApiClient) -> int:
    items = client.get(BASE, include_vanished=args.include_vanished or None)["items"]
    if args.json:
        output.emit_json({"items": items})
    elif items:
        output.table(items, [
            ("NAME", lambda p: p["name"]), ("DEFAULT", lambda p: "yes" if p["is_default"] else ""),
            ("SEEN", lambda p: output.when(p["seen_at"])),
            ("VANISHED", lambda p: output.when(p["vanished_at"]) if p["vanished_at"] else ""),
        ])
    else:
        output.note("no ActiveSync mailbox policies known (discovery has not run, or [eas] is off)")
    return 0


def policies_show(args: argparse.Namespace, client: ApiClient) -> int:
    policy = client.get(_url(args.name))
    if args.json:
        output.emit_json(policy)
    else:
        _print(policy)
    return 0


def policies_create(args: argparse.Namespace, client: ApiClient) -> int:
    policy = client.post(BASE, {"name": args.name, "settings": parse_settings(args.settings)})
    if args.json:
        output.emit_json(policy)
    else:
        print(f"created ActiveSync mailbox policy {policy['name']!r}")
    return 0


def policies_edit(args: argparse.Namespace, client: ApiClient) -> int:
    settings = parse_settings(args.settings)
    if not settings:
        raise CliError("nothing to change: give at least one --set KEY=VALUE", exit_code=2)
    policy = client.request("PATCH", _url(args.name), json={"settings": settings})
    if args.json:
        output.emit_json(policy)
    else:
        print(f"changed ActiveSync mailbox policy {policy['name']!r}; Exchange now shows:")
        _print(policy)
    return 0


def policies_delete(args: argparse.Namespace, client: ApiClient) -> int:
    confirm(f"Delete ActiveSync mailbox policy {args.name!r} from Exchange?", args.yes)
    client.delete(_url(args.name))
    if args.json:
        output.emit_json({"deleted": args.name})
    else:
        print(f"deleted ActiveSync mailbox policy {args.name!r}")
    return 0
