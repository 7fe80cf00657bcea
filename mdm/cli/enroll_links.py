"""``mdm enroll links list|revoke``: the one-time enrollment links, through the admin API."""

from __future__ import annotations

import argparse
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API, leaf, list_page, more_hint, paging, positive_id
from mdm.cli.client import ApiClient
from mdm.cli.output import Column

STATUSES = ["pending", "downloaded", "delivered", "expired", "revoked"]

LINK_COLUMNS: list[Column] = [
    ("ID", lambda e: e["id"]),
    ("PLATFORM", lambda e: e["platform"]),
    ("USER", lambda e: e["user"]),
    ("STATUS", lambda e: e["status"]),
    ("CREATED", lambda e: output.when(e["created_at"])),
    ("EXPIRES", lambda e: output.when(e["expires_at"])),
    ("BY", lambda e: e["created_by"]),
    ("DEVICE", lambda e: e["device_id"]),
]


def register(platforms: Any) -> None:
    links = platforms.add_parser(
        "links", help="list and revoke enrollment links (through the running server)",
        description="List and revoke one-time enrollment links through the admin API.",
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = leaf(links, "list", links_list, "list enrollment links (oldest first)")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--user", metavar="NAME")
    paging(p)
    p = leaf(links, "revoke", links_revoke, "revoke a pending link (it stops working at once)")
    p.add_argument("id", metavar="ID")


def links_list(args: argparse.Namespace, client: ApiClient) -> int:
    page = list_page(args, client, f"{API}/enrollments", {"status": args.status, "user": args.user})
    if args.json:
        output.emit_json(page)
        return 0
    if page["items"]:
        output.table(page["items"], LINK_COLUMNS)
    else:
        output.note("no enrollment links match")
    more_hint(page, "links")
    return 0


def links_revoke(args: argparse.Namespace, client: ApiClient) -> int:
    e = client.delete(f"{API}/enrollments/{positive_id(args.id, 'enrollment')}")
    if args.json:
        output.emit_json(e)
    else:
        print(f"revoked enrollment link {e['id']} of {e['user']} ({e['platform']}); it no longer works")
    return 0
