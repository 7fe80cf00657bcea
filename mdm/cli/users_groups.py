"""``mdm users`` and ``mdm groups`` through the admin API.

Users are named by name (or ``#ID``); groups by id, by path from the top (``Corp/Sales``) or by a
name that only one group has. An ambiguous name is refused with the candidates listed.
"""

from __future__ import annotations

import argparse
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API, actions, confirm, every, leaf, list_page, more_hint, paging
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError, Subparsers
from mdm.cli.output import Column

GROUP_HELP = "group id, path from the top (Corp/Sales) or a name only one group has"


def register(sub: Subparsers) -> None:
    users = actions(sub, "users", "list, create, show and delete users (device owners)")
    p = leaf(users, "list", users_list, "list users")
    paging(p)
    p = leaf(users, "create", users_create, "create a user")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--email", metavar="ADDR")
    p.add_argument("--full-name", metavar="TEXT", help="display name")
    p = leaf(users, "show", users_show, "show a user and the devices they own")
    p.add_argument("user", metavar="USER", help="user name (or #ID)")
    p = leaf(users, "delete", users_delete, "delete a user (their devices stay, without owner)")
    p.add_argument("user", metavar="USER", help="user name (or #ID)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    groups = actions(sub, "groups", "list, create, nest, move and delete groups")
    p = leaf(groups, "list", groups_list, "list groups (--tree: as a tree)")
    p.add_argument("--tree", action="store_true", help="draw the nesting")
    p = leaf(groups, "create", groups_create, "create a group, at the top or under --parent")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--parent", metavar="GROUP", help=GROUP_HELP)
    p = leaf(groups, "move", groups_move, "move a group (with its subgroups and devices) under another")
    p.add_argument("group", metavar="GROUP", help=GROUP_HELP)
    p.add_argument("--parent", required=True, metavar="GROUP", help=f"{GROUP_HELP}; 'none' for the top level")
    p = leaf(groups, "delete", groups_delete, "delete an empty group")
    p.add_argument("group", metavar="GROUP", help=GROUP_HELP)


# ---- users --------------------------------------------------------------------------------------
USER_COLUMNS: list[Column] = [
    ("ID", lambda u: u["id"]),
    ("NAME", lambda u: u["name"]),
    ("FULL NAME", lambda u: u["display_name"]),
    ("EMAIL", lambda u: u["email"]),
    ("CREATED", lambda u: output.when(u["created_at"])),
]


def resolve_user(client: ApiClient, text: str) -> dict[str, Any]:
    """A user by name, or by id written ``#ID``."""
    if text.startswith("#") and text[1:].isascii() and text[1:].isdigit():
        user: dict[str, Any] = client.get(f"{API}/users/{int(text[1:])}")
        return user
    found = client.get(f"{API}/users", name=text)["items"]
    if not found:
        raise CliError(f"no user named {text!r} (mdm users list shows them)")
    return dict(found[0])


def users_list(args: argparse.Namespace, client: ApiClient) -> int:
    page = list_page(args, client, f"{API}/users", {})
    if args.json:
        output.emit_json(page)
        return 0
    if page["items"]:
        output.table(page["items"], USER_COLUMNS)
    else:
        output.note("no users yet (mdm users create NAME)")
    more_hint(page, "users")
    return 0


def users_create(args: argparse.Namespace, client: ApiClient) -> int:
    body = {"name": args.name, "email": args.email, "display_name": args.full_name}
    user = client.post(f"{API}/users", {k: v for k, v in body.items() if v is not None})
    if args.json:
        output.emit_json(user)
    else:
        print(f"created user {user['name']!r} (id {user['id']})")
    return 0


def users_show(args: argparse.Namespace, client: ApiClient) -> int:
    user = resolve_user(client, args.user)
    devices = every(client, f"{API}/devices", user=user["name"])
    if args.json:
        output.emit_json({**user, "devices": devices})
        return 0
    output.fields([("id", user["id"]), ("name", user["name"]), ("full name", user["display_name"]),
                   ("email", user["email"]), ("created", output.when(user["created_at"])),
                   ("devices", len(devices))])
    if devices:
        print()
        output.table(devices, [("ID", lambda d: d["id"]), ("PROTOCOL", lambda d: d["protocol"]),
                               ("STATUS", lambda d: d["status"]), ("NAME", lambda d: d["name"]),
                               ("SERIAL", lambda d: d["serial_number"])])
    return 0


def users_delete(args: argparse.Namespace, client: ApiClient) -> int:
    user = resolve_user(client, args.user)
    confirm(f"Delete user {user['name']!r} (id {user['id']})? Their devices stay, without owner.", args.yes)
    client.delete(f"{API}/users/{user['id']}")
    if args.json:
        output.emit_json({"deleted": user["id"], "name": user["name"]})
    else:
        print(f"deleted user {user['name']!r}")
    return 0


# ---- groups -------------------------------------------------------------------------------------
def _paths(groups: list[dict[str, Any]]) -> dict[int, str]:
    """Every group's path from the top, ``Corp/Sales/EMEA``."""
    by_id = {g["id"]: g for g in groups}
    paths: dict[int, str] = {}

    def path(gid: int) -> str:
        if gid not in paths:
            trail, current, seen = [], by_id.get(gid), set()
            while current is not None and current["id"] not in seen:
                seen.add(current["id"])
                trail.append(current["name"])
                current = by_id.get(current["parent_id"]) if current["parent_id"] else None
            paths[gid] = "/".join(reversed(trail))
        return paths[gid]

    for g in groups:
        path(g["id"])
    return paths


def _all_groups(client: ApiClient) -> list[dict[str, Any]]:
    return list(client.get(f"{API}/groups")["items"])


def resolve_group(client: ApiClient, text: str, groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A group by id, by path from the top, or by a name only one group has."""
    groups = _all_groups(client) if groups is None else groups
    paths = _paths(groups)
    if text.isascii() and text.isdigit():
        found = [g for g in groups if g["id"] == int(text)]
        if found:
            return found[0]
        if not any(g["name"] == text for g in groups):  # else: a group named with digits
            raise CliError(f"no group {text} (mdm groups list shows them)")
    by_path = [g for g in groups if paths[g["id"]] == text.strip("/")]
    if len(by_path) == 1:
        return by_path[0]
    by_name = [g for g in groups if g["name"] == text]
    if len(by_name) == 1:
        return by_name[0]
    if not by_name:
        raise CliError(f"no group named {text!r} (mdm groups list shows them)")
    candidates = ", ".join(f"{g['id']} ({paths[g['id']]})" for g in by_name)
    raise CliError(f"{len(by_name)} groups are named {text!r}: {candidates}; give the id or the path")


def group_path(client: ApiClient, group: dict[str, Any]) -> str:
    return str(_paths(_all_groups(client)).get(group["id"], group["name"]))


def groups_list(args: argparse.Namespace, client: ApiClient) -> int:
    groups = _all_groups(client)
    paths = _paths(groups)
    if args.json:
        output.emit_json({"items": [{**g, "path": paths[g["id"]]} for g in groups]})
        return 0
    if not groups:
        output.note("no groups yet (mdm groups create NAME)")
        return 0
    if not args.tree:
        output.table(sorted(groups, key=lambda g: paths[g["id"]]), [
            ("ID", lambda g: g["id"]), ("PATH", lambda g: paths[g["id"]]),
            ("PARENT", lambda g: g["parent_id"]), ("CREATED", lambda g: output.when(g["created_at"])),
        ])
        return 0
    children: dict[int | None, list[dict[str, Any]]] = {}
    for g in sorted(groups, key=lambda g: (g["name"], g["id"])):
        children.setdefault(g["parent_id"], []).append(g)

    def draw(parent: int | None, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, g in enumerate(kids):
            last = i == len(kids) - 1
            print(f"{prefix}{'└── ' if last else '├── '}{g['name']}  [{g['id']}]")
            draw(g["id"], prefix + ("    " if last else "│   "))

    for top in children.get(None, []):
        print(f"{top['name']}  [{top['id']}]")
        draw(top["id"], "")
    return 0


def groups_create(args: argparse.Namespace, client: ApiClient) -> int:
    parent = resolve_group(client, args.parent) if args.parent else None
    group = client.post(f"{API}/groups", {"name": args.name, "parent_id": parent["id"] if parent else None})
    if args.json:
        output.emit_json(group)
    else:
        print(f"created group {group['id']} ({group_path(client, group)})")
    return 0


def groups_move(args: argparse.Namespace, client: ApiClient) -> int:
    groups = _all_groups(client)
    group = resolve_group(client, args.group, groups)
    parent = None if args.parent.lower() == "none" else resolve_group(client, args.parent, groups)
    moved = client.put(f"{API}/groups/{group['id']}/parent", {"parent_id": parent["id"] if parent else None})
    if args.json:
        output.emit_json(moved)
    else:
        print(f"moved group {moved['id']}: now {group_path(client, moved)}")
    return 0


def groups_delete(args: argparse.Namespace, client: ApiClient) -> int:
    group = resolve_group(client, args.group)
    client.delete(f"{API}/groups/{group['id']}")
    if args.json:
        output.emit_json({"deleted": group["id"], "name": group["name"]})
    else:
        print(f"deleted group {group['id']} ({group['name']})")
    return 0
