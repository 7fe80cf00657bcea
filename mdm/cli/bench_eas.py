"""``mdm bench eas``: the registration and runner of the EAS discovery benchmark (``mdm.bench.eas``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mdm.cli.common import CliError


def register(kinds: Any) -> None:
    b = kinds.add_parser(
        "eas",
        help="EAS discovery of a generated Exchange organisation (time, devices/s, memory)",
        description="Generate an Exchange organisation in memory, run a discovery of it into a fresh "
        "database (twice: all new, then unchanged) and report time, throughput, CPU and memory.",
    )
    b.add_argument("--mailboxes", type=int, default=50_000, help="mailboxes (default 50000)")
    b.add_argument("--devices", type=int, default=100_000, help="device partnerships (default 100000)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--batch", type=int, default=100, help="mailboxes per pipeline (default 100)")
    b.add_argument("--concurrency", type=int, default=4, help="pipelines at once (default 4)")
    b.add_argument(
        "--runner",
        choices=("local", "psrp"),
        default="local",
        help="local: in-process over the organisation; psrp: through the PSRP fake and a KDC",
    )
    b.add_argument("--database-url", default="", help="default: SQLite in a temporary directory")
    b.add_argument("--heap", action="store_true", help="also trace the Python heap (slower)")
    b.add_argument("--once", action="store_true", help="only the first run")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=run_eas)


def run_eas(args: argparse.Namespace) -> int:
    from mdm.bench import eas

    options = eas.Options(
        mailboxes=args.mailboxes,
        devices=args.devices,
        seed=args.seed,
        batch=args.batch,
        concurrency=args.concurrency,
        runner=args.runner,
        database_url=args.database_url,
        heap=args.heap,
        second_run=not args.once,
    )
    try:
        report = asyncio.run(eas.run(options, lambda line: print(line, file=sys.stderr, flush=True)))
    except eas.BenchError as exc:
        raise CliError(str(exc), exit_code=2) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else eas.render(report))
    return 0
