#!/usr/bin/env python3
"""The PostgreSQL backend's CPU per binding probe, straight on asyncpg (no mdm server).

Developer tool behind the cold-poll figures in docs/PERFORMANCE.md (issue 12): it runs the cold
poll's binding probe (``mdm.ios.store_binding_probe``) for the fleet's fingerprints on
``--connections`` connections, as fast as they answer or at ``--rate`` probes per second in
total, ``--batch`` fingerprints per statement (the coalesced ``IN (...)`` form), and reports the
backends' CPU per probe (``/proc/PID/schedstat``; run it on the database's machine). Kept busy, a
backend spent ~27-40 µs per probe; at 600-900 probes/s, one statement each, 85-110 µs on 1 or
16 connections alike: the wake-up, not the look-up::

    python scripts/pg-probe-wakeups.py --dsn postgresql://postgres@127.0.0.1/fleet --rate 1000
    python scripts/pg-probe-wakeups.py --dsn ... --rate 1000 --batch 8 --connections 1

The database is one prepared by ``mdm bench fleet --database-url ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from mdm.db.prepared import compile_form
from mdm.ios.store_binding_probe import BATCH_STMTS, BINDING_PROBE_STMT, SIZES


def _cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0])


def _sql(batch: int) -> str:
    stmt = BINDING_PROBE_STMT if batch == 0 else BATCH_STMTS[batch]
    dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
    return compile_form(stmt, dialect).sql


async def run(args: argparse.Namespace) -> None:
    conns = [await asyncpg.connect(args.dsn) for _ in range(args.connections)]
    try:
        fps = [r[0] for r in await conns[0].fetch("SELECT cert_fingerprint FROM ios_devices LIMIT 10000")]
        if not fps:
            raise SystemExit("no ios_devices: prepare the database with mdm bench fleet")
        batch = args.batch
        statements = [await c.prepare(_sql(batch)) for c in conns]

        async def probe(statement: Any, first: int) -> None:
            if batch == 0:
                await statement.fetchrow("processing", fps[first % len(fps)])
            else:
                await statement.fetch("processing", *(fps[(first + k) % len(fps)] for k in range(batch)))

        per_statement = max(1, batch)
        for statement in statements:  # past PostgreSQL's first five custom plans
            for i in range(8):
                await probe(statement, i)
        pids = [c.get_server_pid() for c in conns]
        cpu0, t0 = sum(map(_cpu_ns, pids)), time.perf_counter()
        starts = iter(range(0, args.count, per_statement))
        gap = args.connections * per_statement / args.rate if args.rate else 0.0

        async def worker(statement: Any) -> None:
            for first in starts:
                await probe(statement, first)
                if gap:
                    await asyncio.sleep(gap)

        await asyncio.gather(*(worker(s) for s in statements))
        wall = time.perf_counter() - t0
        used = sum(map(_cpu_ns, pids)) - cpu0
        print(f"{args.count:,} probes, {args.connections} connection(s), "
              f"{'one per statement' if batch == 0 else f'{batch} per statement'}: "
              f"{args.count / wall:,.0f}/s, backends' CPU {used / 1e3 / args.count:.1f} µs per probe")
    finally:
        for c in conns:
            await c.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="postgresql://... of a fleet's database")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--count", type=int, default=5000, help="probes in all")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="probes per second in all (0: as fast as answered)")
    parser.add_argument("--batch", type=int, default=0, choices=(0, *SIZES),
                        help="fingerprints per IN (...) statement (0: the one-fingerprint probe)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
