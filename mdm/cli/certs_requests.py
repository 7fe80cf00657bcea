"""``mdm certs requests [--status S]``, ``mdm certs requests poll ID``, ``mdm certs requests
cancel ID``: the requests an enterprise CA holds pending, through the admin API of the running
server. The arguments are parsed in ``mdm.cli.certs_cmd``."""

from __future__ import annotations

import argparse
from typing import Any

from mdm.cli import output
from mdm.cli.certs_cmd import API
from mdm.cli.client import ApiClient, settings_from
from mdm.cli.common import CliError

REQUESTS = f"{API}/requests"

COLUMNS: list[output.Column] = [
    ("ID", lambda r: r["id"]),
    ("STATUS", lambda r: r["status"]),
    ("SOURCE", lambda r: r["source"]),
    ("CA ID", lambda r: r["ca_request_id"]),
    ("TYPE", lambda r: r["cert_type"]),
    ("NAME", lambda r: r["common_name"]),
    ("PURPOSE", lambda r: r["purpose"]),
    ("CREATED", lambda r: output.when(r["created_at"])),
    ("MESSAGE", lambda r: r["message"] or ""),
]


def _id(text: str) -> int:
    if not text.isdigit():
        raise CliError(f"request id {text!r}: give the number `mdm certs requests` shows", exit_code=2)
    return int(text)


def _show(args: argparse.Namespace, row: dict[str, Any]) -> None:
    if args.json:
        output.emit_json(row)
    else:
        output.fields([(k, row[k]) for k in row])


def run_requests(args: argparse.Namespace) -> int:
    action = getattr(args, "requests_action", None)
    with ApiClient(settings_from(args)) as client:
        if action == "poll":
            row = client.request("POST", f"{REQUESTS}/{_id(args.id)}/poll")
            _show(args, row)
            return 0
        if action == "cancel":
            row = client.request("DELETE", f"{REQUESTS}/{_id(args.id)}")
            _show(args, row)
            output.note("polling stopped; withdraw the request at the CA as well")
            return 0
        params = {"status": args.status, "limit": args.limit}
        page = client.get(REQUESTS, **params)
    if args.json:
        output.emit_json(page)
        return 0
    output.table(page["items"], COLUMNS)
    if page["next_cursor"]:
        output.note("more requests: narrow with --status or raise --limit")
    return 0


def print_pending(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """``mdm certs issue`` when the CA holds the request (202)."""
    if args.json:
        output.emit_json(result)
    else:
        output.note(result["message"])
        output.note(f"follow it with `mdm certs requests` (id {result['request']['id']}); "
                    "the certificate is recorded once the CA issues it")
    return 0
