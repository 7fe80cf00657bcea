"""``mdm`` command line: one module per command group, each with a ``register(subparsers)``.

Errors an operator can act on are printed as one line (``mdm: error: ...``) with exit status 2
for usage/configuration problems and 1 for runtime failures; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mdm import __version__
from mdm.cli import bench_cmd, certs_cmd, client_commands, enroll_cmd, init_cmd, serve_cmd, sim_cmd
from mdm.cli.common import CliError

GROUPS = [init_cmd, serve_cmd, client_commands, enroll_cmd, certs_cmd, sim_cmd, bench_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdm", description="Mobile Device Management service")
    parser.add_argument("--version", action="version", version=f"mdm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
