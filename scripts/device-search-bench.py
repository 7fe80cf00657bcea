#!/usr/bin/env python3
"""Benchmark of the device list's search (``GET /api/v1/devices?q=``) at fleet scale.

Migrates a throwaway database to head (timing what the migrations applied), inserts N device rows
straight into ``devices`` (a re-run reuses them), then times the store's own page and count
statements (``mdm.core.store_devices``) with and without ``q``: p50/p99 wall time and this
process's CPU per statement over random substrings of existing names, serials and identifiers
(hits), random strings (misses), common substrings and 1-2 character queries.

    .venv/bin/python scripts/device-search-bench.py --database-url sqlite+aiosqlite:////tmp/search.sqlite3
    .venv/bin/python scripts/device-search-bench.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/mdm_bench_search

On PostgreSQL the CPU is the server backend's: the wall time is the figure there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import string
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text

from mdm.core import store_devices as store
from mdm.db import migrate
from mdm.db.engine import Database
from mdm.db.models import Device

FIRST = [
    "Alice",
    "Bob",
    "Chloé",
    "Dmitri",
    "Émile",
    "Fatima",
    "Grace",
    "Hiro",
    "Inès",
    "José",
    "Kai",
    "Lena",
    "Mohammed",
    "Nora",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Søren",
    "Tomás",
    "Uma",
    "Yuki",
]
KIND = ["iPhone", "iPad", "Mac", "Pixel", "Galaxy", "Tab", "Kiosk", "Scanner"]
ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789ABCDEF"


def device_row(i: int, rnd: random.Random, now: datetime) -> dict[str, Any]:
    protocol = (1, 1, 1, 2, 4)[i % 5]
    if protocol == 1:
        identifier = f"00008{rnd.randrange(16**3):03X}-{''.join(rnd.choices(HEX, k=16))}"
    else:
        identifier = "".join(rnd.choices("0123456789abcdef", k=16))
    return {
        "protocol": protocol,
        "identifier": identifier,
        "name": f"{rnd.choice(FIRST)}'s {rnd.choice(KIND)} {i}" if i % 7 else None,
        "serial_number": "".join(rnd.choices(ALNUM, k=12)) if i % 11 else None,
        "status": ("ok", "ok", "ok", "ok", "unmanaged", "wiped")[i % 6],
        "supported_commands": 0,
        "enrolled_at": now,
        "push_valid": False,
        "inventory": {},
        "attributes": {},
    }


async def prepare(db: Database, n: int, batch: int) -> tuple[int, float]:
    async with db.session() as session:
        have = int(await session.scalar(select(func.count()).select_from(Device)) or 0)
    rnd = random.Random(have)  # noqa: S311 - test data
    now = datetime.now(UTC)
    start = time.monotonic()
    for lo in range(have, n, batch):
        rows = [device_row(i, rnd, now) for i in range(lo, min(n, lo + batch))]
        async with db.session() as session, session.begin():
            await session.execute(insert(Device.__table__), rows)
        if lo // batch % 20 == 0:
            print(f"  inserted {lo + len(rows)}/{n} ({time.monotonic() - start:.0f} s)", flush=True)
    return n - have, time.monotonic() - start


async def sample_values(db: Database, k: int, rnd: random.Random) -> list[str]:
    async with db.session() as session:
        top = int(await session.scalar(select(func.max(Device.id))) or 0)
        out: list[str] = []
        while len(out) < k:
            row = (
                await session.execute(
                    select(Device.name, Device.serial_number, Device.identifier).where(
                        Device.id == rnd.randint(1, top)
                    )
                )
            ).first()
            values = [v for v in (row or ()) if v and len(v) >= 8]
            if values:
                out.append(rnd.choice(values))
    return out


def queries(values: list[str], rnd: random.Random) -> dict[str, list[str]]:
    hits = []
    for v in values:
        size = rnd.randint(3, 8)
        start = rnd.randrange(len(v) - size + 1)
        q = v[start : start + size]
        hits.append(q.lower() if rnd.random() < 0.5 else q)
    misses = [
        "".join(rnd.choices(string.ascii_lowercase + string.digits, k=rnd.randint(5, 8))) for _ in values
    ]
    return {
        "hit": hits,
        "miss": misses,
        "common": ["iphone", "ipad", "'s ", "pixel", "00008", "galaxy", "kiosk", "alice"],
        "short": ["a", "7", "z", "ab", "x9", "s "],
    }


async def timed(db: Database, call: Callable[[Any], Awaitable[Any]]) -> tuple[float, float, Any]:
    async with db.session() as session:
        cpu0, t0 = sum(os.times()[:2]), time.perf_counter()
        result = await call(session)
        return (time.perf_counter() - t0) * 1000, (sum(os.times()[:2]) - cpu0) * 1000, result


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls = sorted(s[0] for s in samples)
    p99 = walls[min(len(walls) - 1, round(0.99 * (len(walls) - 1)))]
    return {
        "n": len(walls),
        "p50_ms": round(statistics.median(walls), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(walls[-1], 2),
        "cpu_ms_mean": round(statistics.fmean(s[1] for s in samples), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=50, help="hits and misses each")
    parser.add_argument("--limit", type=int, default=51, help="page size as the API asks (limit + 1)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    db = Database(args.database_url)
    report: dict[str, Any] = {"database": db.engine.dialect.name, "devices": args.devices}
    try:
        t0 = time.monotonic()
        report["migrations_applied"] = await migrate.upgrade(db)
        report["migrate_s"] = round(time.monotonic() - t0, 1)
        added, seconds = await prepare(db, args.devices, args.batch)
        report["inserted"] = added
        report["insert_s"] = round(seconds, 1)
        if db.engine.dialect.name == "postgresql":
            async with db.engine.begin() as conn:
                await conn.execute(text("ANALYZE devices"))
        rnd = random.Random(args.seed)  # noqa: S311 - test data
        qs = queries(await sample_values(db, args.queries, rnd), rnd)
        async with db.session() as session:
            top = int(await session.scalar(select(func.max(Device.id))) or 0)
        results: dict[str, Any] = {}
        baseline: list[tuple[float, float]] = []
        for _ in range(args.queries):
            after = rnd.randint(0, top)
            wall, cpu, _ = await timed(
                db, lambda s, a=after: store.device_page(s, limit=args.limit, after_id=a)
            )
            baseline.append((wall, cpu))
        results["page, no q (random after_id)"] = summary(baseline)
        for kind, items in qs.items():
            pages, deep, counts, matched = [], [], [], []
            for q in items:
                wall, cpu, rows = await timed(db, lambda s, q=q: store.device_page(s, limit=args.limit, q=q))
                pages.append((wall, cpu))
                if rows:
                    last = rows[-1][0].id
                    wall, cpu, _ = await timed(
                        db, lambda s, q=q, a=last: store.device_page(s, limit=args.limit, after_id=a, q=q)
                    )
                    deep.append((wall, cpu))
                wall, cpu, n = await timed(db, lambda s, q=q: store.count_devices(s, q=q))
                counts.append((wall, cpu))
                matched.append(n)
            results[f"q {kind}: first page"] = summary(pages)
            if deep:
                results[f"q {kind}: next page"] = summary(deep)
            results[f"q {kind}: count"] = summary(counts) | {
                "matched_median": statistics.median(matched),
                "matched_max": max(matched),
            }
            filtered = []
            for q in items:
                wall, cpu, _ = await timed(
                    db,
                    lambda s, q=q: store.device_page(
                        s, limit=args.limit, q=q, status="unmanaged", protocol=1
                    ),
                )
                filtered.append((wall, cpu))
            results[f"q {kind} + status + protocol: first page"] = summary(filtered)
        report["results"] = results
    finally:
        await db.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['database']}: {report['devices']} devices (inserted {report['inserted']} in "
        f"{report['insert_s']} s; migrations {report['migrations_applied']} in {report['migrate_s']} s)"
    )
    print(f"{'':44} {'n':>3} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'cpu ms':>8}  matched")
    for name, r in report["results"].items():
        extra = f"  median {r['matched_median']}, max {r['matched_max']}" if "matched_max" in r else ""
        cells = f"{r['n']:>3} {r['p50_ms']:>9} {r['p99_ms']:>9} {r['max_ms']:>9} {r['cpu_ms_mean']:>8}"
        print(f"{name:44} {cells}{extra}")


asyncio.run(main())
