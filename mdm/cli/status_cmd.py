"""``mdm status``: the traffic lights of a running server (``GET /api/v1/status``)."""

from __future__ import annotations

import argparse

from mdm.cli import output
from mdm.cli.api_cmd import API, leaf
from mdm.cli.client import ApiClient
from mdm.cli.common import Subparsers

HELP = "traffic lights per area (green, yellow, red, light blue, grey); exit status 2 when any is red"
EPILOG = """\
Areas: enrollment, push, certificates, command_backlog, android, eas, core_link (docs/status.md
gives each light's rules). Exit status: 0 when no light is red, 2 when any light is red, 1 when
the server cannot be asked. --json prints the document as the API gives it."""
RED_EXIT = 2
LABELS = {"green": "green", "yellow": "YELLOW", "red": "RED", "light_blue": "light blue", "grey": "grey"}


def register(sub: Subparsers) -> None:
    p = leaf(sub, "status", show_status, HELP)
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def show_status(args: argparse.Namespace, client: ApiClient) -> int:
    doc = client.get(f"{API}/status")
    if args.json:
        output.emit_json(doc)
    else:
        print(f"overall: {LABELS.get(doc['overall'], doc['overall'])}  "
              f"(at {output.when(doc['generated_at'])})")
        width = max(len(a["area"]) for a in doc["areas"])
        for area in doc["areas"]:
            light = LABELS.get(area["light"], area["light"])
            reason = f"  {area['reason']}" if area["reason"] else ""
            print(f"{area['area']:<{width}}  {light:<10}{reason}")
    return RED_EXIT if any(a["light"] == "red" for a in doc["areas"]) else 0
