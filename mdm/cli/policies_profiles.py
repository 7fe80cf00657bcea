"""``mdm policies profiles``: policy profiles, the conditional settings fragments of a policy
(activation by device tags and out of office hours; ``docs/policies.md``)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API, leaf
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError
from mdm.cli.policies_common import (
    POLICY_HELP,
    done,
    parse_value,
    patch,
    policy_key_value,
    resolve_policy,
    setting_line,
)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def register_profiles(pol: Any) -> None:
    prof = pol.add_parser("profiles", help="policy profiles: conditional settings over a policy",
                          description="policy profiles: conditional settings over a policy").add_subparsers(
        dest="profile_action", metavar="ACTION", required=True)
    p = leaf(prof, "list", profiles_list, "list a policy's profiles (highest priority first)")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p = leaf(prof, "add", profiles_add, "add a profile")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p.add_argument("name", metavar="NAME")
    _profile_options(p)
    p = leaf(prof, "edit", profiles_edit, "change a profile's priority, conditions or state")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p.add_argument("name", metavar="NAME")
    _profile_options(p)
    p.add_argument("--active", action="store_true", help="activate it")
    p.add_argument("--always", action="store_true", help="drop every condition")
    p = leaf(prof, "set", profiles_set, "set a setting of a profile")
    policy_key_value(p, profile=True)
    p = leaf(prof, "unset", profiles_unset, "remove settings from a profile")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p.add_argument("name", metavar="NAME")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p = leaf(prof, "delete", profiles_delete, "remove a profile")
    p.add_argument("policy", metavar="POLICY", help=POLICY_HELP)
    p.add_argument("name", metavar="NAME")


def _profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--priority", type=int, help="higher wins within the policy (-1000..1000)")
    p.add_argument("--tags-any", metavar="T1,T2", help="active when the device has one of these tags")
    p.add_argument("--tags-all", metavar="T1,T2", help="active when the device has all of these tags")
    p.add_argument("--office-hours", action="append", metavar="DAYS HH:MM-HH:MM",
                   help="office hours, e.g. 'mon-fri 09:00-17:00' (repeatable): active outside them")
    p.add_argument("--timezone", metavar="TZ",
                   help="time zone of the office hours (IANA, e.g. Europe/Berlin)")
    p.add_argument("--inactive", action="store_true", help="deactivate it")


def _days(text: str) -> list[str]:
    out: list[str] = []
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise CliError(f"office hours: {part!r} is not a day or a range of days (mon-fri)", exit_code=2)
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise CliError(f"office hours: {part!r} runs backwards", exit_code=2)
        out.extend(d for d in DAYS[a:b + 1] if d not in out)
    return out


def office_hours(specs: list[str], zone: str | None) -> dict[str, Any]:
    if not zone:
        raise CliError("--office-hours needs --timezone", exit_code=2)
    hours = []
    for spec in specs:
        match = re.fullmatch(r"\s*(\S+)\s+(\d\d:\d\d)-(\d\d:\d\d)\s*", spec)
        if not match:
            raise CliError(f"office hours {spec!r}: expected 'mon-fri 09:00-17:00'", exit_code=2)
        hours.append({"days": _days(match[1]), "start": match[2], "end": match[3]})
    return {"timezone": zone, "office_hours": hours}


def _tags(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


def _conditions(args: argparse.Namespace, current: dict[str, Any] | None = None) -> dict[str, Any] | None:
    given = args.tags_any is not None or args.tags_all is not None or args.office_hours or args.timezone
    if getattr(args, "always", False):
        return {"tags_any": [], "tags_all": [], "out_of_office": None}
    if not given:
        return None
    base = dict(current or {})
    if args.tags_any is not None:
        base["tags_any"] = _tags(args.tags_any)
    if args.tags_all is not None:
        base["tags_all"] = _tags(args.tags_all)
    if args.office_hours or args.timezone:
        base["out_of_office"] = office_hours(args.office_hours or [], args.timezone)
    return base


def _describe(conditions: dict[str, Any]) -> str:
    parts = []
    if conditions.get("tags_any"):
        parts.append("any of " + ",".join(conditions["tags_any"]))
    if conditions.get("tags_all"):
        parts.append("all of " + ",".join(conditions["tags_all"]))
    office = conditions.get("out_of_office")
    if office:
        hours = "; ".join(f"{','.join(h['days'])} {h['start']}-{h['end']}" for h in office["office_hours"])
        parts.append(f"outside {hours} ({office['timezone']})")
    return " and ".join(parts) or "always"


def print_profiles(profiles: list[dict[str, Any]]) -> None:
    output.table(profiles, [
        ("PROFILE", lambda p: p["name"]), ("PRIORITY", lambda p: p["priority"]),
        ("ACTIVE", lambda p: "yes" if p["active"] else "no"), ("WHEN", lambda p: _describe(p["conditions"])),
        ("SETTINGS", lambda p: ", ".join(f"{k}={setting_line(v['value'])}{' (locked)' if v['locked'] else ''}"
                                         for k, v in p["settings"].items())),
    ])


# ---- profiles ----------------------------------------------------------------------------------------
def profiles_list(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    if args.json:
        output.emit_json({"items": policy["profiles"]})
    elif policy["profiles"]:
        print_profiles(policy["profiles"])
    else:
        output.note(f"policy {policy['id']} has no profiles (mdm policies profiles add POLICY NAME)")
    return 0


def profiles_add(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    body: dict[str, Any] = {"name": args.name, "revision": policy["revision"], "active": not args.inactive}
    if args.priority is not None:
        body["priority"] = args.priority
    conditions = _conditions(args)
    if conditions is not None:
        body["conditions"] = conditions
    profile = client.post(f"{API}/policies/{policy['id']}/profiles", body)
    return done(args, profile, f"policy {policy['id']}: added profile {profile['name']!r} "
                                f"(priority {profile['priority']}, when {_describe(profile['conditions'])})")


def _profile(policy: dict[str, Any], name: str) -> dict[str, Any]:
    for profile in policy["profiles"]:
        if profile["name"] == name:
            return dict(profile)
    raise CliError(f"policy {policy['id']} has no profile {name!r} (mdm policies profiles list)")


def profiles_edit(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    current = _profile(policy, args.name)
    if args.active and args.inactive:
        raise CliError("give --active or --inactive, not both", exit_code=2)
    body: dict[str, Any] = {"revision": policy["revision"]}
    if args.priority is not None:
        body["priority"] = args.priority
    if args.active or args.inactive:
        body["active"] = bool(args.active)
    conditions = _conditions(args, current["conditions"])
    if conditions is not None:
        body["conditions"] = conditions
    profile = patch(client, f"{API}/policies/{policy['id']}/profiles/{args.name}", body)
    state = "active" if profile["active"] else "inactive"
    return done(args, profile, f"policy {policy['id']}: profile {args.name!r} now priority "
                               f"{profile['priority']}, {state}, when {_describe(profile['conditions'])}")


def profiles_set(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    current = _profile(policy, args.name)["settings"].get(args.key)
    locked = args.locked if args.locked is not None else bool(current and current["locked"])
    value = parse_value(args.value, args.string)
    body = {"revision": policy["revision"], "set": {args.key: {"value": value, "locked": locked}}}
    profile = patch(client, f"{API}/policies/{policy['id']}/profiles/{args.name}", body)
    return done(args, profile, f"profile {args.name!r}: {args.key} = {setting_line(value)} "
                                f"({'locked' if locked else 'unlocked'})")


def profiles_unset(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    body = {"revision": policy["revision"], "unset": args.keys}
    profile = patch(client, f"{API}/policies/{policy['id']}/profiles/{args.name}", body)
    return done(args, profile, f"profile {args.name!r}: removed {', '.join(args.keys)}")


def profiles_delete(args: argparse.Namespace, client: ApiClient) -> int:
    policy = resolve_policy(client, args.policy)
    _profile(policy, args.name)
    client.delete(f"{API}/policies/{policy['id']}/profiles/{args.name}")
    return done(args, {"deleted": args.name, "policy": policy["id"]},
                 f"policy {policy['id']}: removed profile {args.name!r}")
