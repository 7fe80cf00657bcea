"""``mdm bench push-dispatch``: the push dispatcher's CPU per wake-up (``mdm.bench.push_dispatch``),
the same options and report as ``python -m mdm.bench.push_dispatch``."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "The push dispatcher's CPU per wake-up for a bulk-sized wake, in-process, against the APNs "
    "contract fake (its own process): N prepared iOS devices woken with wake_many (request), then "
    "the dispatcher's worker until every wake-up is accepted (drain)."
)


def register(kinds: Any) -> None:
    b = kinds.add_parser(
        "push-dispatch",
        help="the push dispatcher's CPU per wake-up for a bulk wake, against the APNs fake",
        description=DESCRIPTION,
    )
    _add_arguments(b)
    b.set_defaults(func=run_push_dispatch)


def run_push_dispatch(args: argparse.Namespace) -> int:
    from mdm.bench import push_dispatch

    return push_dispatch.execute(args)  # (its errors are printed as "error: ...", exit code 1 or 2)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """``mdm.bench.push_dispatch.add_arguments``'s options (a test keeps them the same)."""
    parser.add_argument("--devices", type=int, default=100_000, help="devices to wake (default 100000)")
    parser.add_argument("--commands", action="store_true", help="one queued command per device")
    parser.add_argument("--database-url", default="", help="default: SQLite in --data-dir")
    parser.add_argument("--data-dir", default="", help="SQLite's directory (default: a temporary one)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="push.batch_size (default: the setting's default)")
    parser.add_argument("--chunk", type=int, default=2000, help="ids per wake_many (the bulk batch)")
    parser.add_argument("--profile", default="", help="write a cProfile of the drain phase here")
    parser.add_argument("--breakdown", action="store_true", help="one batch at a time, CPU by part")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
