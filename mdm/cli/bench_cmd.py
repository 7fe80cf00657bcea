"""``mdm bench ios``: load-test the iOS command channel with simulated devices.

Without ``--url`` it prepares a data directory (temporary, or ``--data-dir`` to keep identities and
enrolled devices between runs), starts ``mdm serve`` in a subprocess and measures it. With
``--url`` it measures a running (possibly remote) server through its admin API.

A temporary data directory holds the CA's keys and an admin token: it is removed when the run
ends, also on errors, Ctrl-C or SIGTERM, unless ``--keep-data``. A ``--data-dir`` is never removed.
Long phases report progress (counts, rate, ETA) on stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypeVar

from mdm.cli import bench_eas, bench_push_dispatch, bench_services
from mdm.cli.bench_drive import drive
from mdm.cli.common import CliError, Subparsers

T = TypeVar("T")

# The benchmark (server, crypto, simulator) is imported when it runs, not for `mdm bench --help`.


def register(sub: Subparsers) -> None:
    p = sub.add_parser("bench", help="benchmarks with simulated devices")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    b = kinds.add_parser(
        "ios",
        help="iOS idle polls, command round trip and server memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    b.add_argument("--duration", type=float, default=30.0, help="seconds per measured phase (default 30)")
    b.add_argument(
        "--mode",
        choices=("signature", "mtls"),
        default="signature",
        help="device identity: Mdm-Signature on every request (default) or TLS client certificate",
    )
    b.add_argument(
        "--plain",
        action="store_true",
        help="local server's iOS listener in plain-HTTP mode (as behind a TLS-terminating proxy)",
    )
    b.add_argument(
        "--concurrency", type=int, default=50, help="connections of the Python generator (default 50)"
    )
    b.add_argument(
        "--generator",
        choices=("python", "wrk"),
        default="python",
        help="idle-poll load generator: the Python fleet or wrk replaying signed bodies",
    )
    b.add_argument("--wrk-threads", type=int, default=2)
    b.add_argument("--wrk-connections", type=int, default=50)
    b.add_argument(
        "--emit-wrk",
        metavar="DIR",
        type=Path,
        help="also write precomputed signed idle bodies and idle.lua for wrk into DIR",
    )
    b.add_argument("--rt-command", default="Block", help="command type for the round trip (default Block)")
    b.add_argument("--rt-concurrency", type=int, default=4, help="concurrent round trips (default 4)")
    b.add_argument("--rt-delivery", type=int, default=500,
                   help="phase (b2), in rounds: queue the command for this many devices through the "
                        "API (untimed), then measure server CPU for the device side only; repeated "
                        "with the same devices for --rt-delivery-duration (default 500; 0 skips it)")
    b.add_argument("--rt-delivery-duration", type=float,
                   help="phase (b2): seconds of timed delivery, summed over its rounds (default: "
                        "--rt-duration, else --duration; >= 10 s resolves 10-20 %%)")
    b.add_argument("--rt-duration", type=float, help="seconds of round trips (default: --duration)")
    b.add_argument("--apns-fake", action="store_true",
                   help="local runs: APNs configured against the contract fake, so each enqueue owes a "
                        "push the server sends (as in production); use a --data-dir of its own")
    b.add_argument(
        "--background-rate",
        type=float,
        default=200.0,
        help="idle polls per second from other devices during the round trips (default 200)",
    )
    b.add_argument(
        "--no-warmup",
        action="store_true",
        help="measure from a cold server (default: one idle poll per device first)",
    )
    b.add_argument("--skip-idle", action="store_true", help="skip phase (a)")
    b.add_argument("--skip-rt", action="store_true", help="skip phase (b)")
    b.add_argument(
        "--key-type",
        choices=("rsa", "ec"),
        default="rsa",
        help="device keys for local runs: RSA-2048 like enrolled iPhones (default; a pool of 64 keys, each"
        " device still gets its own certificate) or ECDSA P-256",
    )
    local = b.add_argument_group("local server (no --url)")
    local.add_argument("--data-dir", type=Path,
                       help="keep the server data here, never removed (default: a new temp dir, removed "
                       "at the end)")
    local.add_argument("--keep-data", action="store_true",
                       help="keep the temporary data directory (CA keys, admin token) and wrk scripts; "
                       "their place is printed")
    local.add_argument(
        "--database-url",
        default="",
        help="postgresql+asyncpg://... (default: embedded SQLite in the data dir)",
    )
    local.add_argument("--pool-size", type=int, default=10, help="database pool size (default 10)")
    remote = b.add_argument_group("remote server")
    remote.add_argument("--url", help="iOS listener base URL, e.g. https://mdm.example.com")
    remote.add_argument("--admin-url", help="admin API base URL, e.g. https://mdm.example.com:13299")
    remote.add_argument("--token", help="admin API token (enrollments, commands)")
    remote.add_argument("--ca", type=Path, help="root CA that signs the server certificates (PEM)")
    remote.add_argument("--server-pid", type=int, help="read this process's RSS (same host only)")
    b.add_argument(
        "--py-spy",
        metavar="FILE",
        type=Path,
        help="record the server with py-spy (raw format) during phase (a) and summarise it",
    )
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=run_ios)
    _register_fleet(kinds)
    bench_services.register(kinds)
    bench_eas.register(kinds)
    bench_push_dispatch.register(kinds)


FLEET_HELP = """Prepare N enrolled iOS devices straight into the tables of a local server (kept in
--data-dir and reused), point its APNs client at the contract fake, then measure: (b) a bulk
command to all devices until queued, (c) until every wake-up is accepted, (d) M simulated devices
answering when woken (time to 50/99/100 %), (e) idle polls, (f) GET /devices pages, (g) a
check-in storm and cold first polls after a restart; server RSS every second, CPU per operation."""


def _register_fleet(kinds: Any) -> None:
    b = kinds.add_parser(
        "fleet",
        help="a fleet of N devices: bulk command, wake-ups, answers, idle polls, pages, check-in storm",
        description=FLEET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--devices", type=int, required=True, help="enrolled devices to prepare (N)")
    b.add_argument("--answering", type=int,
                   help="simulated devices that answer when woken (default min(N, 10000))")
    b.add_argument("--data-dir", type=Path, required=True,
                   help="the prepared server data (kept: later runs with the same N reuse the fleet)")
    b.add_argument("--database-url", default="",
                   help="postgresql+asyncpg://... (default: embedded SQLite in the data dir)")
    b.add_argument("--key-type", choices=("rsa", "ec"), default="rsa",
                   help="the pool of 64 device keys (first preparation only; default rsa)")
    b.add_argument("--plain", action="store_true", help="the iOS listener in plain-HTTP mode")
    b.add_argument("--command", default="Block", help="the bulk command type (default Block)")
    b.add_argument("--concurrency", type=int, default=50, help="simulated devices' connections (default 50)")
    b.add_argument("--idle-seconds", type=float, default=15.0, help="length of the idle-poll phase")
    b.add_argument("--timeout", type=float, default=900.0,
                   help="seconds allowed for bulk queuing, wake-ups and answers together (default 900)")
    b.add_argument("--skip", action="append", choices=("idle", "pages", "storm", "cold"), default=[],
                   help="skip a phase (repeatable; cold: the cold first polls after a restart)")
    b.add_argument("--push-worker", choices=("inline", "process"), default="inline",
                   help="push.worker: the push dispatcher's worker in the server or a process of its own")
    b.add_argument("--push-workers", type=int, default=1, metavar="N",
                   help="push.workers: N push worker processes (N > 1: PostgreSQL only, implies "
                        "--push-worker process; default 1)")
    b.add_argument("--push-worker-nice", type=int, default=None, metavar="N",
                   help="push.worker_nice: the worker processes' nice value (more than 0: PostgreSQL only; "
                        "default: the setting's, 10 on PostgreSQL)")
    b.add_argument("--cold-polls", type=int, default=None, metavar="N",
                   help="cold first polls after the restart (default: the answering count; more "
                        "take the next fleet devices)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=run_fleet)


def run_fleet(args: argparse.Namespace) -> int:
    from mdm.bench import fleet, fleet_apns, fleet_phases, fleet_prepare
    from mdm.bench.local import LocalServerError

    if args.devices < 1 or (args.answering is not None and args.answering < 0) or args.concurrency < 1:
        raise CliError("--devices and --concurrency must be >= 1, --answering >= 0", exit_code=2)
    options = fleet.Options(
        devices=args.devices, data_dir=args.data_dir, answering=args.answering,
        database_url=args.database_url, key_type=args.key_type, plain=args.plain, command=args.command,
        concurrency=args.concurrency, idle_seconds=args.idle_seconds, timeout=args.timeout,
        skip=tuple(args.skip), push_worker=args.push_worker, push_workers=args.push_workers,
        push_worker_nice=args.push_worker_nice, cold_polls=args.cold_polls,
    )

    try:
        report = drive(lambda say: fleet.run(options, say))
    except (fleet.FleetBenchError, fleet_prepare.FleetPrepareError) as exc:
        raise CliError(str(exc), exit_code=2) from None
    except (LocalServerError, fleet_apns.FakeApnsError, fleet_phases.PhaseError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.as_dict(), indent=2, default=sorted) if args.json else fleet.render(report))
    return 0


def run_ios(args: argparse.Namespace) -> int:
    from mdm.bench import ios
    from mdm.bench.local import LocalServerError
    from mdm.sim.fleet import FleetError
    from mdm.sim.profile import ProfileError
    from mdm.sim.transport import TransportError

    options = ios.Options(
        devices=args.devices,
        duration=args.duration,
        mode=args.mode,
        plain=args.plain,
        concurrency=args.concurrency,
        url=args.url,
        admin_url=args.admin_url,
        token=args.token,
        ca=args.ca,
        server_pid=args.server_pid,
        database_url=args.database_url,
        data_dir=args.data_dir,
        pool_size=args.pool_size,
        key_type=args.key_type,
        generator=args.generator,
        wrk_threads=args.wrk_threads,
        wrk_connections=args.wrk_connections,
        emit_wrk=args.emit_wrk,
        rt_command=args.rt_command,
        rt_concurrency=args.rt_concurrency,
        rt_delivery=args.rt_delivery,
        rt_duration=args.rt_duration,
        rt_delivery_duration=args.rt_delivery_duration,
        background_rate=args.background_rate,
        apns_fake=args.apns_fake,
        warmup=not args.no_warmup,
        py_spy=args.py_spy,
        skip_idle=args.skip_idle,
        skip_rt=args.skip_rt,
        keep_data=args.keep_data,
    )
    too_few = min(options.concurrency, options.rt_concurrency) < 1
    if too_few or min(options.background_rate, options.rt_delivery) < 0:
        raise CliError("--concurrency and --rt-concurrency must be >= 1, --background-rate and --rt-delivery "
                       ">= 0", exit_code=2)
    if options.rt_delivery_duration is not None and options.rt_delivery_duration <= 0:
        raise CliError("--rt-delivery-duration must be > 0", exit_code=2)

    try:
        report = drive(lambda say: ios.run(options, say))
    except ios.BenchError as exc:
        raise CliError(str(exc), exit_code=2) from None
    except (
        LocalServerError,
        FleetError,
        TransportError,
        ProfileError,
        FileNotFoundError,
        RuntimeError,
    ) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else ios.render(report))
    return 0
