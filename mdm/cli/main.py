"""``mdm`` command line: one module per command group, each with a ``register(subparsers)``.

Errors an operator can act on are printed as one line (``mdm: error: ...``) with exit status 2
for usage/configuration problems and 1 for runtime failures; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mdm import __version__
from mdm.cli.common import CliError, Subparsers

# Modules under mdm.cli, each with a register(subparsers).
GROUPS = [
    "init_cmd", "serve_cmd", "client_commands", "events_cmd", "users_groups", "enroll_cmd", "certs_cmd",
    "sim_cmd", "bench_cmd", "push_cmd", "dev_cmd", "policies_cmd", "status_cmd", "eas_cmd",
    "adcs_cmd",
]
# Top-level command -> its group. Running a command imports only its group: importing all of them
# pulls in the server, crypto and benchmark stacks, seconds of start-up for every `mdm devices list`.
# A command missing here still works (every group is imported then), only slower.
COMMANDS = {
    "init": "init_cmd", "serve": "serve_cmd", "reload": "serve_cmd",
    "login": "client_commands", "devices": "client_commands", "command": "client_commands",
    "events": "events_cmd", "tokens": "client_commands",
    "users": "users_groups", "groups": "users_groups",
    "enroll": "enroll_cmd", "certs": "certs_cmd", "sim": "sim_cmd", "bench": "bench_cmd",
    "push": "push_cmd", "dev": "dev_cmd", "policies": "policies_cmd", "status": "status_cmd",
    "eas": "eas_cmd", "adcs": "adcs_cmd",
}
# The one-line help of each command for `mdm --help`, so that the overview imports no group at
# all (tests/test_cli_fast.py keeps these equal to the groups' own help). A command without a
# line here is listed by importing its group.
SUMMARIES = {
    "init": "prepare a data directory (config, database, CA, certificates, token)",
    "serve": "run the service (every enabled listener)",
    "reload": "re-read certificates in a running server (SIGHUP)",
    "login": "verify an API token and store it for the CLI",
    "devices": "list, show, move and delete devices",
    "command": "send, recall and inspect commands",
    "events": "list events (newest last); --follow to keep watching",
    "tokens": "manage API tokens (admin scope)",
    "users": "list, create, show and delete users (device owners)",
    "groups": "list, create, nest, move and delete groups",
    "enroll": "enroll a device: one-time profile link + QR code (or --file for Apple Configurator)",
    "certs": "certificates: issue, list, revoke, rules, server certificates, CA",
    "sim": "simulated devices (manual testing)",
    "bench": "benchmarks with simulated devices",
    "push": "push notification services (APNs)",
    "dev": "development helpers (contract fakes)",
    "policies": "policies of KES devices: settings, locks, inheritance, profiles",
    "eas": "Exchange ActiveSync: discovery, mailboxes, devices, mailbox policies",
    "adcs": "AD CS web enrollment: the Enrollment Agent, the login to certsrv",
    "status": "traffic lights per area (green, yellow, red, light blue, grey); exit status 2 when any is red",
}


def _first_word(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _register(sub: Subparsers, group: str) -> None:
    importlib.import_module(f"mdm.cli.{group}").register(sub)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: only the group of its command; for anything else (``--help``, no
    command, an unknown one) the overview, built from SUMMARIES. Without ``argv``: every group."""
    parser = argparse.ArgumentParser(prog="mdm", description="Mobile Device Management service")
    parser.add_argument("--version", action="version", version=f"mdm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    first = None if argv is None else _first_word(argv)
    if argv is None:
        for group in GROUPS:
            _register(sub, group)
    elif first in COMMANDS:
        _register(sub, COMMANDS[first])
    else:
        # A group with a command that has no summary, or that COMMANDS does not know, is imported
        # (complete, only slower); the other commands are listed from SUMMARIES, in COMMANDS order.
        load = {g for c, g in COMMANDS.items() if c not in SUMMARIES}
        load |= set(GROUPS) - set(COMMANDS.values())
        loaded: set[str] = set()
        for command, group in [*COMMANDS.items(), *((g, g) for g in GROUPS if g not in COMMANDS.values())]:
            if group in load:
                if group not in loaded:
                    loaded.add(group)
                    _register(sub, group)
            elif command not in sub.choices:
                sub.add_parser(command, help=SUMMARIES[command])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"mdm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
