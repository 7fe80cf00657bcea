"""What ``mdm policies`` and ``mdm policies profiles`` share: naming a policy, reading a VALUE,
the PATCH call and the output of a change."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError

POLICY_HELP = "policy id, or its group (path Corp/Sales, or a name only one group has)"


def policy_key_value(p: argparse.ArgumentParser, *, profile: bool = False) -> None:
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    if profile:
        p.add_argument("name", metavar="NAME", help="profile name")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", help="JSON (8, true, [\"a\"]) or else a string")
    p.add_argument("--string", action="store_true", help="take VALUE as a string even if it parses as JSON")
    lock = p.add_mutually_exclusive_group()
    lock.add_argument("--lock", dest="locked", action="store_const", const=True, help="lock it")
    lock.add_argument("--unlock", dest="locked", action="store_const", const=False, help="unlock it")


def parse_value(text: str, as_string: bool = False) -> Any:
    if as_string:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def resolve_policy(client: ApiClient, text: str) -> dict[str, Any]:
    if text.isascii() and text.isdigit():
        found: dict[str, Any] = client.get(f"{API}/policies/{int(text)}")
        return found
    from mdm.cli.users_groups import resolve_group

    group = resolve_group(client, text)
    items = client.get(f"{API}/policies", group=group["id"])["items"]
    if not items:
        raise CliError(f"group {text!r} (id {group['id']}) has no policy (mdm policies create {text})")
    return dict(items[0])


def patch(client: ApiClient, path: str, body: dict[str, Any]) -> Any:
    return client.request("PATCH", path, json=body)


def setting_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def done(args: argparse.Namespace, data: Any, message: str) -> int:
    if args.json:
        output.emit_json(data)
    else:
        print(message)
    return 0
