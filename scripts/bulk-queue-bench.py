#!/usr/bin/env python3
"""In-process benchmark of bulk queuing (issue 12): the bulk operation's batches alone.

No server, no pushes: migrates a database to head, fills ``devices`` with N enrolled iOS device
rows (set-based SQL, a re-run reuses them: queuing reads only ``devices``, so the certificates and
identity rows of ``mdm bench fleet``'s preparation are not needed), then records a bulk ``Block``
to all of them with ``BulkService.create`` and drives ``BulkService.step`` batch by batch, as the
admin API's worker does. The pusher registered for iOS only counts the ids it is handed.

Per run it reports the CPU of this process per device (split into the event loop's thread:
Python, SQLAlchemy, the driver's Python side; and the other threads: aiosqlite's connection thread,
i.e. SQLite's own work), on PostgreSQL the backends' CPU (``/proc/<pid>/stat`` of this
database's backends: the server must run on this machine), devices/s, wall per batch at the start
and at the end of the run (cost must not grow with the table), every statement's wall time per
device by kind, and RSS. ``--profile FILE`` writes a cProfile of the batches and prints its top.

Afterwards the run's commands are deleted (``--after delete``, the default: every run starts from
the same tables) or finished (``--after finish``: completed and out of the queue, so the next run
queues beside a history of 10^6 commands).

    .venv/bin/python scripts/bulk-queue-bench.py --devices 100000 --data-dir /tmp/bulkq-sqlite
    .venv/bin/python scripts/bulk-queue-bench.py --devices 1000000 \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bulkq_bench
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db import migrate
from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.db.types import UtcDateTime
from mdm.ios.commands import IosCommandTranslator
from mdm.push import store as push_store

FILL_CHUNK = 50_000
TICKS = os.sysconf("SC_CLK_TCK")


class CountingPusher:
    """Takes the wake-ups of each batch and counts them (no push is sent)."""

    def __init__(self) -> None:
        self.woken = 0

    async def wake(self, device_id: int, reason: str) -> None:
        self.woken += 1

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        self.woken += len(device_ids)

    async def wake_at(self, device_id: int, due: datetime, reason: str) -> None:
        self.woken += 1


class OwingCountingPusher(CountingPusher):
    """``--owe``: as the push dispatcher does, owes each batch's wake-ups as ``push_wakeups`` rows
    in the batch's own transaction (``OwingPusher``), so that their statement is measured."""

    async def owe(self, session: AsyncSession, device_ids: Sequence[int], reason: str) -> None:
        now = datetime.now(UTC)
        await push_store.request(session, device_ids, now, reason, now, [int(Protocol.IOS)])
        self.woken += len(device_ids)

    def nudge(self) -> None:
        pass


# ---- the fleet ------------------------------------------------------------------------------------
_COLUMNS = (
    "protocol, identifier, name, model, os_name, os_version, serial_number, status, "
    "supported_commands, enrolled_at, push_token, push_magic, push_valid, inventory, attributes"
)
_VALUES = (
    "1, {ident}, {name}, 'iPhone14,2', 'iOS', '17.4', {serial}, 'ok', 0, :now, {tok}, "
    "{magic}, {true}, '{{}}', '{{\"topic\": \"com.apple.mgmt.bench\"}}'"
)


def _fill_sql(dialect: str) -> str:
    if dialect == "postgresql":
        values = _VALUES.format(
            ident="'0000B0C5-' || lpad(upper(to_hex(i)), 16, '0')",
            name="'Bench iPhone ' || i", serial="'B' || lpad(i::text, 11, '0')",
            tok="md5(i::text) || md5('t' || i::text)", magic="md5('m' || i::text)", true="true",
        )
        series = "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS s(i)"
        return f"INSERT INTO devices ({_COLUMNS}) SELECT {values} FROM {series}"  # noqa: S608 - constants
    values = _VALUES.format(
        ident="printf('0000B0C5-%016X', i)", name="'Bench iPhone ' || i", serial="printf('B%011d', i)",
        tok="hex(randomblob(32))", magic="hex(randomblob(16))", true="1",
    )
    series = "WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi)"
    return f"{series} INSERT INTO devices ({_COLUMNS}) SELECT {values} FROM s"  # noqa: S608 - constants


async def fill(db: Database, n: int) -> tuple[int, float]:
    """Up to ``n`` device rows (a re-run adds only what is missing)."""
    async with db.session() as session:
        have = int(await session.scalar(select(func.count()).select_from(Device)) or 0)
        dialect = session.get_bind().dialect.name
    stmt = text(_fill_sql(dialect)).bindparams(bindparam("now", type_=UtcDateTime()))
    start = time.monotonic()
    for lo in range(have, n, FILL_CHUNK):
        hi = min(n, lo + FILL_CHUNK) - 1
        async with db.transaction() as session:
            await session.execute(stmt, {"lo": lo, "hi": hi, "now": datetime.now(UTC)})
        print(f"  devices {hi + 1}/{n} ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
    if n > have and dialect == "postgresql":
        async with db.engine.connect() as conn:
            await conn.execute(text("COMMIT"))
            await conn.execute(text("ANALYZE devices"))
    return max(0, n - have), time.monotonic() - start


# ---- measuring ------------------------------------------------------------------------------------
def _kind(statement: str) -> str:
    """A statement's kind for the per-statement breakdown."""
    s = " ".join(statement.split()).upper()
    for prefix, name in (
        ("INSERT INTO COMMANDS ", "insert commands"), ("INSERT INTO COMMAND_QUEUE", "insert queue"),
        ("INSERT INTO COMMAND_JOURNAL", "insert journal"), ("INSERT INTO EVENTS", "insert event"),
        ("INSERT INTO BULK_SKIPPED", "insert skipped"), ("UPDATE BULK_OPERATIONS", "update operation"),
        ("WITH", "with (one statement)"), ("INSERT INTO PUSH_WAKEUPS", "insert wake-ups"),
    ):
        if s.startswith(prefix):
            return name
    if s.startswith("SELECT") and "FROM BULK_OPERATIONS" in s:
        return "lock operation"
    if s.startswith("SELECT") and "FROM DEVICES" in s:
        return "select targets"
    return s.split(" ", 1)[0].lower()


class StatementClock:
    """Wall time of every statement by kind (``before/after_cursor_execute``). On SQLite the
    statement runs on aiosqlite's thread while the loop waits: its wall time is SQLite's work."""

    def __init__(self, db: Database) -> None:
        self.seconds: Counter[str] = Counter()
        self.count: Counter[str] = Counter()
        self.on = False
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(db.engine.sync_engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if self.on:
            kind = _kind(statement)
            self.seconds[kind] += time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())
            self.count[kind] += 1


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


async def backend_pids(db: Database) -> list[int]:
    if db.is_sqlite:
        return []
    async with db.session() as session:
        rows = await session.scalars(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ))
        return [int(p) for p in rows.all()]


async def backends_cpu(db: Database, seen: set[int]) -> float:
    """CPU seconds of this database's backends so far (those seen once keep counting)."""
    seen.update(await backend_pids(db))
    return sum(_proc_cpu(p) for p in seen)


async def measure(db: Database, n: int, batch_size: int, profile: str | None, owe: bool) -> dict[str, Any]:
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    pusher = OwingCountingPusher() if owe else CountingPusher()
    pushers = Pushers()
    pushers.register(Protocol.IOS, pusher)
    svc = BulkService(db, translators, pushers, batch_size=batch_size)
    clock = StatementClock(db)
    op = await svc.create("Block", {}, by="bulk-queue-bench")
    seen: set[int] = set()
    pg0 = await backends_cpu(db, seen)
    rss = [rss_mib()]
    batches: list[tuple[float, float, float]] = []  # (wall, process CPU, loop thread CPU)
    profiler = cProfile.Profile() if profile else None
    clock.on = True
    start, cpu0, main0 = time.perf_counter(), time.process_time(), time.thread_time()
    more = True
    while more:
        w, c, m = time.perf_counter(), time.process_time(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        more = await svc.step(op.id)
        if profiler is not None:
            profiler.disable()
        batches.append((time.perf_counter() - w, time.process_time() - c, time.thread_time() - m))
        if len(batches) % 10 == 0:
            rss.append(rss_mib())
    wall, cpu, main = time.perf_counter() - start, time.process_time() - cpu0, time.thread_time() - main0
    clock.on = False
    pg = await backends_cpu(db, seen) - pg0
    rss.append(rss_mib())
    async with db.session() as session:
        queued, skipped = (await session.execute(text(
            "SELECT queued, skipped FROM bulk_operations WHERE id = :id"), {"id": op.id})).one()
    per = 1e6 / max(1, queued + skipped)
    tenth = max(1, len(batches) // 10)
    first, last = batches[:tenth], batches[-tenth - 1:-1] or batches[-tenth:]
    report: dict[str, Any] = {
        "bulk_id": op.id, "devices": n, "batch_size": batch_size, "batches": len(batches),
        "queued": queued, "skipped": skipped, "woken": pusher.woken,
        "wall_s": round(wall, 2), "devices_per_s": round((queued + skipped) / wall),
        "cpu_us_per_device": round(cpu * per, 1),
        "loop_thread_cpu_us_per_device": round(main * per, 1),
        "other_threads_cpu_us_per_device": round((cpu - main) * per, 1),
        "pg_backends_cpu_us_per_device": round(pg * per, 1) if not db.is_sqlite else None,
        "batch_wall_ms_first_tenth": round(1000 * statistics.median(b[0] for b in first), 1),
        "batch_wall_ms_last_tenth": round(1000 * statistics.median(b[0] for b in last), 1),
        "batch_cpu_ms_first_tenth": round(1000 * statistics.median(b[1] for b in first), 1),
        "batch_cpu_ms_last_tenth": round(1000 * statistics.median(b[1] for b in last), 1),
        "statements_us_per_device": {
            k: round(v * per, 1) for k, v in sorted(clock.seconds.items(), key=lambda kv: -kv[1])
        },
        "statements_per_batch": {k: round(v / len(batches), 2) for k, v in sorted(clock.count.items())},
        "rss_mib": {"start": round(rss[0]), "peak": round(max(rss)), "end": round(rss[-1]),
                    "max_rss_kernel": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)},
    }
    if profiler is not None and profile:
        profiler.dump_stats(profile)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        report["profile_top"] = out.getvalue()
    return report


async def after(db: Database, bulk_id: int, how: str) -> float:
    """Leave the tables as the next run needs them (outside the timing)."""
    start = time.monotonic()
    if how == "keep":
        return 0.0
    async with db.transaction() as session:
        if how == "delete":
            await session.execute(text(
                "DELETE FROM command_journal WHERE command_id IN (SELECT id FROM commands WHERE bulk_id = :b)"
            ), {"b": bulk_id})
            await session.execute(text(
                "DELETE FROM command_queue WHERE command_id IN (SELECT id FROM commands WHERE bulk_id = :b)"
            ), {"b": bulk_id})
            await session.execute(text("DELETE FROM commands WHERE bulk_id = :b"), {"b": bulk_id})
        else:
            await session.execute(text(
                "DELETE FROM command_queue WHERE command_id IN (SELECT id FROM commands WHERE bulk_id = :b)"
            ), {"b": bulk_id})
            await session.execute(text(
                "UPDATE commands SET status = 'completed', active = NULL WHERE bulk_id = :b"
            ), {"b": bulk_id})
        await session.execute(text(
            "DELETE FROM events WHERE type IN ('commands_created', 'bulk_command_created', "
            "'bulk_command_queued', 'bulk_operation_progress')"
        ))
        await session.execute(text("DELETE FROM bulk_skipped WHERE bulk_id = :b"), {"b": bulk_id})
        await session.execute(text("DELETE FROM push_wakeups WHERE reason = :r"), {"r": f"bulk:{bulk_id}"})
    if not db.is_sqlite:
        async with db.engine.connect() as conn:
            await conn.execute(text("COMMIT"))
            await conn.execute(text(
                "VACUUM ANALYZE commands, command_queue, command_journal, events, push_wakeups"
            ))
    else:
        async with db.engine.connect() as conn:
            await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return time.monotonic() - start


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--data-dir", default="/tmp/bulkq-sqlite",  # noqa: S108 - a bench's scratch directory
                        help="SQLite: where mdm.sqlite3 lives")
    parser.add_argument("--database-url", help="instead of the SQLite file under --data-dir")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--after", choices=("delete", "finish", "keep"), default="delete")
    parser.add_argument("--owe", action="store_true",
                        help="owe the wake-ups in each batch's transaction (push_wakeups rows), "
                             "as the server does")
    parser.add_argument("--explain", action="store_true",
                        help="PostgreSQL: auto_explain (analyze, buffers, triggers) of every statement of "
                             "this bench's sessions, to the server's log")
    parser.add_argument("--profile", help="cProfile of the batches to this file (slows them)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    if not args.database_url:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        args.database_url = f"sqlite+aiosqlite:///{Path(args.data_dir).resolve() / 'mdm.sqlite3'}"
    return args


async def main(args: argparse.Namespace) -> None:
    url = args.database_url
    db = Database(url)
    if args.explain and not db.is_sqlite:
        event.listen(db.engine.sync_engine, "connect", _auto_explain)
    try:
        if not db.is_sqlite:
            await _create_database(url)
        applied = await migrate.upgrade(db)
        added, fill_s = await fill(db, args.devices)
        runs = []
        for _ in range(args.runs):
            load = os.getloadavg()
            report = await measure(db, args.devices, args.batch_size, args.profile, args.owe)
            report["load_before"] = [round(x, 2) for x in load]
            report["after_s"] = round(await after(db, report["bulk_id"], args.after), 1)
            runs.append(report)
            if not args.json:
                top = report.pop("profile_top", None)
                print(json.dumps(report, indent=1))
                if top:
                    print(top)
        if args.json:
            print(json.dumps({"url": db.safe_url, "migrations": applied, "filled": added,
                              "fill_s": round(fill_s, 1), "runs": runs}, indent=1))
    finally:
        await db.close()


def _auto_explain(dbapi_connection: Any, record: Any) -> None:
    """``--explain``: this session's statements' plans with their actual times, triggers and
    buffers in the server's log (a session setting: other sessions of the server are untouched)."""
    cursor = dbapi_connection.cursor()
    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_analyze = on", "SET auto_explain.log_buffers = on",
                    "SET auto_explain.log_triggers = on"):
        cursor.execute(setting)
    cursor.close()


async def _create_database(url: str) -> None:
    """The PostgreSQL database of the URL, created when missing (through the server's
    ``postgres`` database)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    target = make_url(url)
    admin = create_async_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                       {"n": target.database})
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
