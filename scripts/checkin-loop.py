#!/usr/bin/env python3
"""Check-in storms and cold polls through the iOS service layer, without HTTP: CPU per message.

Developer tool behind the check-in figures in docs/PERFORMANCE.md (issue 12). It works on a
prepared bench data directory (``mdm bench ios --data-dir DIR``): its identities
(``bench/devices.jsonl``), its CA and its database. On SQLite it works on a copy of the database
(the original is not touched; the server must not be running). On PostgreSQL (``--database-url``)
it changes that database: use one of its own.

Phases, each with fresh caches (a new resolver, verifier and binding cache, as after a restart):

- ``enroll``: the first N devices are forgotten first (device rows deleted, their certificates
  unlinked), then each sends Authenticate + TokenUpdate (a first enrollment);
- ``cold``: one signed Idle poll per device (chain verification, binding look-up, queue probe);
- ``recheckin``: Authenticate + TokenUpdate again from the same devices (a fleet returning after
  an outage; the push token changes);
- ``warm``: one more Idle poll each (caches warm).

``--split`` sends the re-check-in as two phases (every Authenticate, then every TokenUpdate) and
reports each message type's CPU apart (the binding Authenticate cached serves the TokenUpdate).

Signatures are made before each phase (the device's cost, not the server's). Prints the CPU per
message of each phase; ``--profile FILE`` writes a cProfile of the phases to FILE::

    python scripts/checkin-loop.py --data-dir /tmp/checkin-sqlite --count 1000 [--profile /tmp/p]

``--fleet`` takes a data directory of ``mdm bench fleet`` instead (its driven devices, its push
topic: the fleet of 10^5 or 10^6 devices the storm of that bench checks in against);
``--explain`` prints SQLite's query plan of every statement the phases run (once per statement),
to check that none scans a table that grows with the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from mdm.bench import fleet_prepare, identities
from mdm.config_sections import load as load_config
from mdm.core.identity import BindingCache
from mdm.db.engine import Database
from mdm.ios import channel, checkin
from mdm.ios.config import IosConfig
from mdm.ios.identity import IdentityResolver
from mdm.ios.messages import load_plist, parse_checkin, parse_report
from mdm.ios.service import IosService
from mdm.ios.state import QueueHint
from mdm.pki import castore
from mdm.pki.ca import CertificateAuthority
from mdm.pki.trust import ClientCertVerifier
from mdm.push.topic import read_topic
from mdm.sim.fleet import Member
from mdm.sim.transport import CHECKIN_TYPE, COMMAND_TYPE

Signed = tuple[bytes, str]
PHASES = ("enroll", "cold", "warm", "recheckin")


def service(db: Database, cfg: IosConfig, anchors: list[Any]) -> IosService:
    """A service as ``mdm serve`` builds it, with empty caches."""
    resolver = IdentityResolver(
        ClientCertVerifier(anchors, []),
        trusted_proxies=[],
        signature_max_age=cfg.signature_max_age,
        cache_size=cfg.identity_cache_size,
    )
    return IosService(
        db=db,
        config=cfg,
        resolver=resolver,
        bindings=BindingCache(cfg.identity_cache_size, cfg.binding_cache_seconds),
        hint=QueueHint(cfg.queue_hint_seconds, cfg.identity_cache_size),
    )


def explain_statements(db: Database, path: str) -> Callable[[], None]:
    """Record every statement SQLite runs (``set_trace_callback``: the prepared ones too, with
    their values); the function returned prints ``EXPLAIN QUERY PLAN`` of each distinct one."""
    import re
    import sqlite3


    seen: dict[str, str] = {}
    shape = re.compile(r"'[^']*'|X'[0-9A-Fa-f]*'|\b\d+(\.\d+)?\b")

    def trace(statement: str) -> None:
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if head in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
            seen.setdefault(shape.sub("?", statement), statement)

    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection._connection._conn.set_trace_callback(trace)

    event.listen(db.engine.sync_engine, "connect", connect)

    def report() -> None:
        plain = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for key, statement in seen.items():
            print(" ".join(key.split())[:400])
            try:
                for row in plain.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall():
                    print("    ", row[-1])
            except sqlite3.Error as exc:
                print("     (not explained:", exc, ")")
        plain.close()

    return report


def checkin_messages(member: Member, topic: str, round_: int) -> list[Signed]:
    token = (member.udid.encode() + bytes([round_])).ljust(32, b"\0")[:32]
    out = []
    for message in (
        {"MessageType": "Authenticate", "Topic": topic, **member.facts.checkin_identity()},
        {
            "MessageType": "TokenUpdate",
            "Topic": topic,
            "UDID": member.udid,
            "Token": token,
            "PushMagic": member.facts.device_id,
            "UnlockToken": member.device_state().unlock_token,
            "AwaitingConfiguration": False,
        },
    ):
        body, headers = member.signed(message, CHECKIN_TYPE)
        out.append((body, headers["Mdm-Signature"]))
    return out


def idle_message(member: Member) -> Signed:
    body, headers = member.signed({"Status": "Idle", "UDID": member.udid}, COMMAND_TYPE)
    return body, headers["Mdm-Signature"]


async def send_checkin(svc: IosService, signed: Signed) -> None:
    body, signature = signed
    message = parse_checkin(load_plist(body))
    identity = svc.resolver.from_signature(signature, body)
    await checkin.handle(svc, identity, message)


async def send_idle(svc: IosService, signed: Signed) -> None:
    body, signature = signed
    report = parse_report(load_plist(body))
    identity = svc.resolver.from_signature(signature, body)
    binding = await svc.binding_of(identity, report.identifier)
    svc.last_seen.touch(binding.device_id)
    await channel.handle(svc, binding, report)


async def phase(
    name: str,
    devices: list[list[Signed]],
    send: Callable[[Signed], Awaitable[None]],
    concurrency: int,
    profiler: cProfile.Profile | None,
    statements: list[int] | None = None,
) -> None:
    """Each device's messages in order; ``concurrency`` devices at a time. ``statements``: the
    engine's statement counter (``count_statements``), reported per message."""
    latencies: list[float] = []
    queue = iter(devices)

    async def worker() -> None:
        for sequence in queue:
            for signed in sequence:
                t0 = time.perf_counter()
                await send(signed)
                latencies.append(time.perf_counter() - t0)

    if profiler is not None:
        profiler.enable()
    if os.environ.get("CHECKIN_THREADS"):
        print("  threads before (cpu s):", _threads())
    counted0 = statements[0] if statements is not None else 0
    t0, wall0 = os.times(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    t1, wall = os.times(), time.perf_counter() - wall0
    user, system = t1.user - t0.user, t1.system - t0.system
    cpu = user + system
    if profiler is not None:
        profiler.disable()
    n = max(1, len(latencies))
    if os.environ.get("CHECKIN_THREADS"):
        print("  threads (cpu s):", _threads())
    print(
        f"{name:10s} {n:6d} messages: cpu {1e6 * cpu / n:7.0f} µs each "
        f"({n / cpu if cpu else 0:6.0f}/s of CPU), wall {n / wall:6.0f}/s, "
        f"median {1000 * statistics.median(latencies):.2f} ms "
        f"(system {100 * system / cpu if cpu else 0:.0f} %)"
        + (f", {(statements[0] - counted0) / n:.2f} statements each" if statements is not None else "")
    )


def count_statements(db: Database) -> list[int]:
    """A counter of the statements ``db`` runs (SQLAlchemy's and ``mdm.db.prepared``'s: both
    fire ``before_cursor_execute``; BEGIN/COMMIT are not statements here)."""
    counter = [0]

    def count(*_: Any) -> None:
        counter[0] += 1

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    return counter


def _threads() -> dict[str, float]:
    """CPU seconds of each thread of this process so far (Linux)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        name = (task / "comm").read_text().strip()
        out[f"{name}-{task.name}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def forget(db: Database, members: list[Member]) -> None:
    """The devices are unknown again (a first enrollment): rows deleted, certificates unlinked."""
    udids = [m.udid for m in members]
    serials = [m.identity.serial_hex for m in members]
    async with db.transaction() as session:
        conn = await session.connection()
        for start in range(0, len(udids), 500):
            chunk = udids[start : start + 500]
            marks = ",".join(f":u{i}" for i in range(len(chunk)))
            await conn.execute(
                text(f"DELETE FROM devices WHERE identifier IN ({marks})"),  # noqa: S608
                {f"u{i}": u for i, u in enumerate(chunk)},
            )
            chunk = serials[start : start + 500]
            marks = ",".join(f":s{i}" for i in range(len(chunk)))
            await conn.execute(
                text(f"UPDATE certificates SET device_id = NULL WHERE serial IN ({marks})"),  # noqa: S608
                {f"s{i}": s for i, s in enumerate(chunk)},
            )


async def run(args: argparse.Namespace, database_url: str) -> None:
    config = load_config(args.data_dir, require_file=True)
    cfg = config.section(IosConfig)
    ca = CertificateAuthority.load(config.ca_dir, config.ca_passphrase())
    anchors = castore.client_anchors(ca, castore.load_retired(config.ca_dir, config.ca_passphrase()))
    if args.fleet:
        members = await fleet_prepare.driven_members(config, args.count)
        topic = read_topic(config).topic
    else:
        members = identities.load(identities.cache_path(config), [])[: args.count]
        topic = "com.apple.mgmt.bench"
    db = Database(database_url, config.database.pool_size, echo=args.echo)
    explained = explain_statements(db, database_url.split("///", 1)[1]) if args.explain else None
    statements = count_statements(db)
    profiler = cProfile.Profile() if args.profile else None
    profiled = {"enroll"} if args.only_enroll else set(args.profile_phase or ("enroll", "cold", "recheckin"))

    def prof(name: str) -> cProfile.Profile | None:
        return profiler if name in profiled else None

    try:
        await forget(db, members)
        enroll = [checkin_messages(member, topic, 1) for member in members]
        svc = service(db, cfg, anchors)
        await phase(
            "enroll", enroll, lambda s: send_checkin(svc, s), args.concurrency, prof("enroll"), statements
        )
        await svc.last_seen.flush(db)
        idles = [[idle_message(m)] for m in members]
        svc = service(db, cfg, anchors)
        await phase(
            "cold",
            idles,
            lambda s: send_idle(svc, s),
            args.concurrency,
            prof("cold"),
            statements,
        )
        await phase("warm", idles, lambda s: send_idle(svc, s), args.concurrency, prof("warm"), statements)
        await svc.last_seen.flush(db)
        await asyncio.sleep(1.1)  # a later signing time than the enrollment's
        again = [checkin_messages(member, topic, 2) for member in members]
        svc = service(db, cfg, anchors)
        if args.split:  # every Authenticate, then every TokenUpdate: each message's own figure
            for name, index in (("reauth", 0), ("token", 1)):
                await phase(
                    name,
                    [[pair[index]] for pair in again],
                    lambda s: send_checkin(svc, s),
                    args.concurrency,
                    prof("recheckin"),
                    statements,
                )
        else:
            await phase(
                "recheckin",
                again,
                lambda s: send_checkin(svc, s),
                args.concurrency,
                prof("recheckin"),
                statements,
            )
        await svc.last_seen.flush(db)
    finally:
        await db.close()
    if explained is not None:
        explained()
    if profiler is not None:
        profiler.dump_stats(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="a data directory prepared by mdm bench ios"
    )
    parser.add_argument("--count", type=int, default=1000, help="devices (the first N of the bench fleet)")
    parser.add_argument("--concurrency", type=int, default=8, help="messages in flight (default 8)")
    parser.add_argument("--database-url", default="", help="postgresql+asyncpg://... (changed in place)")
    parser.add_argument("--profile", help="write a cProfile of the measured phases here")
    parser.add_argument("--only-enroll", action="store_true", help="profile the enroll phase only")
    parser.add_argument(
        "--profile-phase", action="append", choices=PHASES, help="profile only this phase (repeatable)"
    )
    parser.add_argument("--echo", action="store_true", help="log every SQL statement")
    parser.add_argument(
        "--split", action="store_true", help="re-check-in: Authenticates first, then TokenUpdates"
    )
    parser.add_argument("--fleet", action="store_true", help="a data directory of mdm bench fleet")
    parser.add_argument("--explain", action="store_true", help="print each statement's query plan (SQLite)")
    args = parser.parse_args()
    if args.database_url:
        asyncio.run(run(args, args.database_url))
        return
    source = args.data_dir / "mdm.sqlite3"
    if not source.exists():
        parser.error(f"{source} does not exist (prepare it with mdm bench ios|fleet --data-dir DIR)")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "mdm.sqlite3"
        shutil.copyfile(source, copy)  # the server must not be running: its WAL is not copied
        asyncio.run(run(args, f"sqlite+aiosqlite:///{copy}"))


if __name__ == "__main__":
    main()
