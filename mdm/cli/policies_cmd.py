"""``mdm policies``: the policies of KES devices through the admin API (``docs/policies.md``).

A POLICY is named by its id, or by its group (id is taken as the policy's: give a group by path
``Corp/Sales`` or by a name only one group has). A VALUE is read as JSON when it parses (``8``,
``true``, ``["a","b"]``), otherwise as a string (``--string`` forces a string). Edits carry the
revision they read, so two concurrent edits cannot silently overwrite each other (409).
"""

from __future__ import annotations

import argparse
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API, actions, confirm, leaf, positive_id
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError, Subparsers
from mdm.cli.policies_common import (
    POLICY_HELP,
    done,
    parse_value,
    patch,
    policy_key_value,
    resolve_policy,
    setting_line,
)
from mdm.cli.policies_profiles import print_profiles, register_profiles


def register(sub: Subparsers) -> None:
    pol = actions(sub, "policies", "policies of KES devices: settings, locks, inheritance, profiles")
    p = leaf(pol, "list", policies_list, "list policies")
    p.add_argument("--group", metavar="GROUP", help="only the policy of this group")
    p = leaf(pol, "show", policies_show, "show a policy: settings, locks, flags, profiles")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p = leaf(pol, "create", policies_create, "create the policy of a group (one per group)")
    p.add_argument("group", metavar="GROUP", help="group id, path or unique name")
    p.add_argument("--name", help="policy name (default: the group's path)")
    p.add_argument("--inactive", action="store_true", help="create it inactive")
    p.add_argument("--no-inherit", action="store_true", help="do not inherit the parent groups' policies")
    p.add_argument("--force-inheritance", action="store_true", help="subgroups' policies must inherit")
    p = leaf(pol, "set", policies_set, "set a setting (keeps its lock unless --lock/--unlock)")
    policy_key_value(p)
    p = leaf(pol, "unset", policies_unset, "remove settings")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p.add_argument("keys", nargs="+", metavar="KEY")
    for name, verb in (("lock", "lock"), ("unlock", "unlock")):
        p = leaf(pol, name, policies_lock, f"{verb} settings")
        p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
        p.add_argument("keys", nargs="+", metavar="KEY")
        p.set_defaults(lock_action=name)
    for name, text in (("activate", "activate a policy (applied and inherited)"),
                       ("deactivate", "deactivate a policy (neither applied nor inherited)")):
        p = leaf(pol, name, policies_activate, text)
        p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
        p.set_defaults(activate=name == "activate")
    p = leaf(pol, "delete", policies_delete, "delete a policy and its profiles")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    for name, flag, text in (("inherit", "inherit", "inherit the parent groups' policies: on or off"),
                             ("force-inheritance", "force_inheritance",
                              "force subgroups' policies to inherit: on or off")):
        p = leaf(pol, name, policies_flag, text)
        p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
        p.add_argument("state", choices=["on", "off"])
        p.set_defaults(flag=flag)
    p = leaf(pol, "device", policies_device, "desired vs applied policy of a device")
    p.add_argument("device", metavar="ID", help="device id")
    p = leaf(pol, "tags", policies_tags, "show a device's tags, or replace them (TAG... or --clear)")
    p.add_argument("device", metavar="ID", help="device id")
    p.add_argument("tags", nargs="*", metavar="TAG")
    p.add_argument("--clear", action="store_true", help="remove every tag")
    register_profiles(pol)


# ---- helpers ------------------------------------------------------------------------------------------
def _print_policy(policy: dict[str, Any]) -> None:
    output.fields([
        ("id", policy["id"]), ("name", policy["name"]), ("group", policy["group_id"]),
        ("active", "yes" if policy["active"] else "no"), ("inherit", "yes" if policy["inherit"] else "no"),
        ("force inheritance", "yes" if policy["force_inheritance"] else "no"),
        ("revision", policy["revision"]),
        ("updated", output.when(policy["updated_at"])), ("updated by", policy["updated_by"]),
    ])
    print()
    if policy["settings"]:
        output.table([{"key": k, **v} for k, v in policy["settings"].items()], [
            ("KEY", lambda s: s["key"]), ("VALUE", lambda s: setting_line(s["value"])),
            ("LOCKED", lambda s: "locked" if s["locked"] else ""),
        ])
    else:
        output.note("no settings yet (mdm policies set POLICY KEY VALUE)")
    if policy["profiles"]:
        print()
        print_profiles(policy["profiles"])


# ---- policies ----------------------------------------------------------------------------------------
def policies_list(args: argparse.Namespace, client: ApiClient) -> int:
    params: dict[str, Any] = {}
    if args.group:
        from mdm.cli.users_groups import resolve_group

        params["group"] = resolve_group(client, args.group)["id"]
    items = client.get(f"{API}/policies", **params)["items"]
    if args.json:
        output.emit_json({"items": items})
    elif items:
        output.table(items, [
            ("ID", lambda p: p["id"]), ("GROUP", lambda p: p["group_id"]), ("NAME", lambda p: p["name"]),
            ("ACTIVE", lambda p: "yes" if p["active"] else "no"),
            ("INHERIT", lambda p: "yes" if p["inherit"] else "no"),
            ("FORCE", lambda p: "yes" if p["force_inheritance"] else "no"), ("REV", lambda p: p["revision"]),
            ("SETTINGS", lambda p: len(p["settings"])), ("PROFILES", lambda p: len(p["profiles"])),
        ])
    else:
        output.note("no policies yet (mdm policies create GROUP)")
    return 0


def policies_show(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    if args.json:
        output.emit_json(policy)
    else:
        _print_policy(policy)
    return 0


def policies_create(args: argparse.Namespace, client: ApiClient) -> int:
    from mdm.cli.users_groups import group_path, resolve_group

    group = resolve_group(client, args.group)
    body = {"group_id": group["id"], "name": args.name or group_path(client, group),
            "active": not args.inactive,
            "inherit": not args.no_inherit, "force_inheritance": args.force_inheritance}
    policy = client.post(f"{API}/policies", body)
    return done(args, policy, f"created policy {policy['id']} ({policy['name']!r}) for group {group['id']}")


def policies_set(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    current = policy["settings"].get(args.key)
    locked = args.locked if args.locked is not None else bool(current and current["locked"])
    value = parse_value(args.value, args.string)
    body = {"revision": policy["revision"], "set": {args.key: {"value": value, "locked": locked}}}
    updated = patch(client, f"{API}/policies/{policy['id']}", body)
    state = "locked" if locked else "unlocked"
    return done(args, updated, f"policy {policy['id']}: {args.key} = {setting_line(value)} ({state}), "
                                f"revision {updated['revision']}")


def policies_unset(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    body = {"revision": policy["revision"], "unset": args.keys}
    updated = patch(client, f"{API}/policies/{policy['id']}", body)
    return done(args, updated, f"policy {policy['id']}: removed {', '.join(args.keys)}, "
                                f"revision {updated['revision']}")


def policies_lock(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    body = {"revision": policy["revision"], args.lock_action: args.keys}
    updated = patch(client, f"{API}/policies/{policy['id']}", body)
    return done(args, updated, f"policy {policy['id']}: {args.lock_action}ed {', '.join(args.keys)}, "
                                f"revision {updated['revision']}")


def policies_flag(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    body = {"revision": policy["revision"], args.flag: args.state == "on"}
    updated = patch(client, f"{API}/policies/{policy['id']}", body)
    name = args.flag.replace("_", " ")
    return done(args, updated, f"policy {policy['id']}: {name} {args.state}, revision {updated['revision']}")


def policies_activate(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    verb = "activate" if args.activate else "deactivate"
    updated = client.post(f"{API}/policies/{policy['id']}/{verb}", None)
    return done(args, updated, f"policy {policy['id']} {verb}d, revision {updated['revision']}")


def policies_delete(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    profiles = len(policy["profiles"])
    confirm(f"Delete policy {policy['id']} ({policy['name']!r}) and its {profiles} profile(s)?",
            args.yes)
    client.delete(f"{API}/policies/{policy['id']}")
    return done(args, {"deleted": policy["id"]}, f"deleted policy {policy['id']}")


def policies_device(args: argparse.Namespace, client: ApiClient) -> int:
    device_id = positive_id(args.device, "device")
    view = client.get(f"{API}/policies/devices/{device_id}")
    if args.json:
        output.emit_json(view)
        return 0
    output.fields([
        ("device", view["device_id"]), ("group", view["group_id"]),
        ("desired version", view["desired_version"] or "(no policy)"),
        ("applied version", view["applied_version"] or "(none reported)"),
        ("applied at", output.when(view["applied_at"])),
        ("in sync", "yes" if view["in_sync"] else "no"), ("tags", ", ".join(view["tags"]) or "-"),
        ("from", "; ".join(f"{c['kind']} {c['name']} (policy {c['policy_id']}): {c['settings']}"
                           for c in view["contributors"]) or "-"),
    ])
    if view["settings"]:
        print()
        applied = view.get("applied_settings") or {}
        output.table([{"key": k, **v} for k, v in view["settings"].items()], [
            ("KEY", lambda s: s["key"]), ("VALUE", lambda s: setting_line(s["value"])),
            ("LOCKED", lambda s: "locked" if s["locked"] else ""), ("SOURCE", lambda s: s["source"]),
            ("ON DEVICE", lambda s: setting_line(applied[s["key"]]) if s["key"] in applied else ""),
        ])
    return 0


def policies_tags(args: argparse.Namespace, client: ApiClient) -> int:
    device_id = positive_id(args.device, "device")
    path = f"{API}/devices/{device_id}/tags"
    if args.clear and args.tags:
        raise CliError("give TAGs or --clear, not both", exit_code=2)
    result = client.put(path, {"tags": args.tags}) if (args.tags or args.clear) else client.get(path)
    return done(args, result, f"device {device_id}: {', '.join(result['tags']) or '(no tags)'}")


