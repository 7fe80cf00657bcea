"""``mdm bench kes``, ``mdm bench outbox`` and ``mdm bench push``: their options and runs (the
benchmarks themselves are imported when they run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mdm.cli.bench_drive import drive
from mdm.cli.common import CliError


def register(kinds: Any) -> None:
    _register_push(kinds)
    _register_kes(kinds)
    _register_outbox(kinds)


def _local_server_arguments(b: argparse.ArgumentParser) -> None:
    """The options of a bench that runs its own local server: its data, its database, JSON."""
    b.add_argument("--data-dir", type=Path, help="keep the server data here, reused (default: a temp dir)")
    b.add_argument("--keep-data", action="store_true", help="keep the temporary data directory")
    b.add_argument("--database-url", default="",
                   help="postgresql+asyncpg://... (default: embedded SQLite in the data dir)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")


def _register_kes(kinds: Any) -> None:
    b = kinds.add_parser(
        "kes",
        help="KES (Android) steady syncs per second over mutual TLS, with and without reuse",
        description="Prepare N enrolled KES devices straight into the tables of a local server, then "
        "measure steady syncs over mutual TLS: each device on its own kept-alive connection, then a "
        "full TLS handshake per sync; p50/p99/max latency, server CPU per sync and RSS.",
    )
    b.add_argument("--devices", type=int, default=1000, help="enrolled devices to prepare (default 1000)")
    b.add_argument("--connections", type=int,
                   help="devices that sync, each on its own connection (default min(N, 1000))")
    b.add_argument("--rate", type=float, default=1500.0,
                   help="offered syncs per second in all, kept-alive connections (default 1500)")
    b.add_argument("--handshake-rate", type=float, default=300.0,
                   help="offered syncs per second in all, a full TLS handshake each (default 300)")
    b.add_argument("--duration", type=float, default=30.0, help="seconds per measured phase (default 30)")
    b.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    b.add_argument("--min-spacing", type=float,
                   help="the local server's [kes] min_sync_spacing_seconds (default: its own)")
    b.add_argument("--skip", action="append", choices=("reuse", "handshake"), default=[],
                   help="skip a phase (repeatable)")
    b.add_argument("--py-spy", metavar="FILE", type=Path,
                   help="record the server with py-spy (raw format) during phase (b) and summarise it")
    _local_server_arguments(b)
    b.set_defaults(func=run_kes)


def run_kes(args: argparse.Namespace) -> int:
    from mdm.bench import kes, kes_prepare
    from mdm.bench.local import LocalServerError

    options = kes.Options(
        devices=args.devices, connections=args.connections, rate=args.rate,
        handshake_rate=args.handshake_rate, duration=args.duration,
        workers=args.workers, database_url=args.database_url, data_dir=args.data_dir,
        keep_data=args.keep_data, skip=tuple(args.skip), min_spacing=args.min_spacing, py_spy=args.py_spy,
    )
    try:
        report = drive(lambda say: kes.run(options, say))
    except (kes.BenchError, kes_prepare.KesPrepareError) as exc:
        raise CliError(str(exc), exit_code=2) from None
    except (LocalServerError, RuntimeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else kes.render(report))
    return 0


OUTBOX_HELP = """Prepare N undelivered events about D devices straight into the outbox of a local
server, start the generic endpoint's contract fake (mutual TLS, HMAC, de-duplication) in a process
of its own and `mdm serve` with [reporting] transport = "generic", and measure the catch-up until
the outbox is empty: events/s (overall, steady), time to drain, batch round trips, server CPU per
event and RSS at start, peak and end."""


def _register_outbox(kinds: Any) -> None:
    b = kinds.add_parser(
        "outbox",
        help="catch-up of an event backlog to the core server's generic endpoint (local receiver)",
        description=OUTBOX_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--events", type=int, default=1_000_000, help="events in the backlog (default 1000000)")
    b.add_argument("--batch-size", type=int, default=1000, help="[reporting] batch_size (default 1000)")
    b.add_argument("--devices", type=int, default=1000, help="devices the events are about (default 1000)")
    b.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for the catch-up")
    b.add_argument("--py-spy", metavar="FILE", type=Path,
                   help="record the server with py-spy (raw format), 30 s of the catch-up, and summarise")
    _local_server_arguments(b)
    b.set_defaults(func=run_outbox)


def run_outbox(args: argparse.Namespace) -> int:
    from mdm.bench import outbox, outbox_prepare, outbox_receiver
    from mdm.bench.local import LocalServerError

    options = outbox.Options(
        events=args.events, batch_size=args.batch_size, devices=args.devices, data_dir=args.data_dir,
        keep_data=args.keep_data, database_url=args.database_url, timeout=args.timeout, py_spy=args.py_spy,
    )
    try:
        report = drive(lambda say: outbox.run(options, say))
    except (outbox.BenchError, outbox_prepare.OutboxPrepareError) as exc:
        raise CliError(str(exc), exit_code=2) from None
    except (LocalServerError, outbox_receiver.ReceiverError, RuntimeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else outbox.render(report))
    return 0


def _register_push(kinds: Any) -> None:
    b = kinds.add_parser(
        "push",
        help="APNs pushes per second to the contract fake (HTTP/2, mutual TLS)",
        description="Start the APNs contract fake in a subprocess (test push CA and client certificate "
        "in a temporary directory) and send pushes to it from this process; report pushes/s, latency, "
        "client CPU per push and both processes' memory.",
    )
    b.add_argument("--pushes", type=int, default=100_000, help="pushes to send (default 100000)")
    b.add_argument("--concurrency", type=int, default=1000, help="pushes in flight (default 1000)")
    b.add_argument("--connections", type=int, default=2, help="HTTP/2 connections (default 2)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    from mdm.bench import push

    if args.pushes < 1 or args.concurrency < 1 or not 1 <= args.connections <= 32:
        raise CliError("--pushes and --concurrency must be >= 1, --connections 1..32", exit_code=2)

    try:
        report = drive(lambda say: push.run(args.pushes, args.concurrency, args.connections, say))
    except push.BenchError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else push.render(report))
    return 0
