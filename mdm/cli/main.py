"""``mdm`` command line: one module per command group, each with a ``register(subparsers)``.

Errors an operator can act on are printed as one line (``mdm: error: ...``) with exit status 2
for usage/configuration problems and 1 for runtime failures; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from mdm import __version__
from mdm.cli.common import CliError

# Modules under mdm.cli, each with a register(subparsers).
GROUPS = ["init_cmd", "serve_cmd", "client_commands", "enroll_cmd", "certs_cmd", "sim_cmd", "bench_cmd"]
# Top-level command -> its group. Running a command imports only its group: importing all of them
# pulls in the server, crypto and benchmark stacks, seconds of start-up for every `mdm devices list`.
# A command missing here still works (every group is imported then), only slower.
COMMANDS = {
    "init": "init_cmd", "serve": "serve_cmd", "reload": "serve_cmd",
    "login": "client_commands", "devices": "client_commands", "command": "client_commands",
    "events": "client_commands", "tokens": "client_commands",
}


def _groups(argv: Sequence[str]) -> list[ModuleType]:
    first = next((a for a in argv if not a.startswith("-")), None)
    names = [COMMANDS[first]] if first in COMMANDS else GROUPS
    return [importlib.import_module(f"mdm.cli.{name}") for name in names]


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser with every group, or only the group of the command in ``argv``."""
    parser = argparse.ArgumentParser(prog="mdm", description="Mobile Device Management service")
    parser.add_argument("--version", action="version", version=f"mdm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in _groups(argv):
        group.register(sub)
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
