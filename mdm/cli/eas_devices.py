"""``mdm eas discover|discovery|mailboxes|device``: EAS discovery through the admin API
(``/api/v1/eas/discovery``, ``/eas/mailboxes``, ``/eas/devices/{id}``; ``docs/eas.md``)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API, leaf, list_page, more_hint, paging, positive_id
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError

BASE = f"{API}/eas"
WAIT_POLL_SECONDS = 1.0


def register(eas: Any) -> None:
    """Add the discovery actions to the ``mdm eas`` group."""
    p = leaf(eas, "discover", eas_discover, "ask for a discovery of Exchange now")
    p.add_argument("--wait", action="store_true", help="wait until that run has finished")
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="with --wait: give up after this many seconds"
    )
    leaf(eas, "discovery", eas_discovery, "the last (or current) discovery run")
    p = leaf(eas, "mailboxes", eas_mailboxes, "mailboxes discovered in Exchange")
    p.add_argument("--query", "-q", help="part of the identity, name, display name or address")
    paging(p)
    p = leaf(eas, "device", eas_device, "an EAS device's partnerships, statistics and wipe state")
    p.add_argument("device", metavar="ID", help="device id (mdm devices list --protocol eas)")


def _print_run(run: dict[str, Any]) -> None:
    state = "running" if run["running"] else (run["outcome"] or "never run")
    output.fields(
        [
            ("state", state),
            ("requested", output.when(run["requested_at"])),
            ("started", output.when(run["started_at"])),
            ("finished", output.when(run["finished_at"])),
            ("mailboxes", run["mailboxes"]),
            ("devices", run["devices"]),
            ("policies", run["policies"]),
            ("vanished", run["vanished"]),
            ("failed mailboxes", run["failed_mailboxes"]),
            ("by", run["runner"]),
            ("error", run["error"]),
        ]
    )


def eas_discovery(args: argparse.Namespace, client: ApiClient) -> int:
    run = client.get(f"{BASE}/discovery")
    if args.json:
        output.emit_json(run)
    else:
        _print_run(run)
    return 1 if run["outcome"] == "failed" else 0


def eas_discover(args: argparse.Namespace, client: ApiClient) -> int:
    asked = client.post(f"{BASE}/discovery", None)
    if not args.wait:
        if args.json:
            output.emit_json(asked)
        else:
            output.note(
                "discovery requested; the discovering replica starts it within seconds "
                "(mdm eas discovery shows it)"
            )
        return 0
    after = asked["started_at"] if not asked["running"] else None
    deadline = time.monotonic() + args.timeout
    while True:
        run = client.get(f"{BASE}/discovery")
        if run["requested_at"] is None and not run["running"] and run["started_at"] != after:
            break
        if time.monotonic() > deadline:
            raise CliError(f"no discovery finished within {args.timeout:g} s (mdm eas discovery shows it)")
        time.sleep(WAIT_POLL_SECONDS)
    if args.json:
        output.emit_json(run)
    else:
        _print_run(run)
    return 1 if run["outcome"] == "failed" else 0


def eas_mailboxes(args: argparse.Namespace, client: ApiClient) -> int:
    page = list_page(args, client, f"{BASE}/mailboxes", {"q": args.query})
    if args.json:
        output.emit_json(page)
        return 0
    if not page["items"]:
        output.note("no mailboxes (mdm eas discover runs a discovery)")
        return 0
    output.table(
        page["items"],
        [
            ("ID", lambda m: m["id"]),
            ("NAME", lambda m: m["name"]),
            ("ADDRESS", lambda m: m["primary_smtp"]),
            ("ACTIVESYNC", lambda m: "on" if m["activesync_enabled"] else "off"),
            ("POLICY", lambda m: m["policy"]),
            ("DEVICES", lambda m: "yes" if m["has_partnership"] else ""),
            ("VANISHED", lambda m: output.when(m["vanished_at"]) if m["vanished_at"] else ""),
        ],
    )
    more_hint(page, "mailboxes")
    return 0


def eas_device(args: argparse.Namespace, client: ApiClient) -> int:
    device = client.get(f"{BASE}/devices/{positive_id(args.device, 'device')}")
    if args.json:
        output.emit_json(device)
        return 0
    output.fields(
        [
            ("id", device["device_id"]),
            ("EAS DeviceId", device["identifier"]),
            ("status", device["status"]),
            ("model", device["model"]),
            ("OS", " ".join(x for x in (device["os_name"], device["os_version"]) if x)),
            ("owner (user id)", device["user_id"]),
            ("last sync", output.when(device["last_seen_at"])),
        ]
    )
    for part in device["partnerships"]:
        print()
        wipe = part["wipe"]
        output.fields(
            [
                ("mailbox", part["mailbox"]),
                ("partnership", part["exchange_identity"]),
                ("last sync", output.when(part["last_sync"])),
                ("policy applied", part["policy_applied"]),
                ("access", part["access_state"]),
                ("wipe", wipe["state"]),
                ("wipe requested", output.when(wipe["requested_at"])),
                ("wipe sent", output.when(wipe["sent_at"])),
                ("wipe acknowledged", output.when(wipe["acknowledged_at"])),
                ("vanished", output.when(part["vanished_at"]) if part["vanished_at"] else ""),
            ]
        )
        if wipe["note"]:
            output.note(wipe["note"])
    return 0
