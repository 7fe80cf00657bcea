#!/usr/bin/env python3
"""The admin API's single-device enqueue alone, over HTTP: server CPU per enqueue and its tail.

Developer tool behind the enqueue figures in docs/PERFORMANCE.md. It starts ``mdm serve`` on a
data directory prepared by ``mdm bench ios`` (the bench's admin token, its enrolled devices),
then F flows (``--concurrency``) each send ``POST /api/v1/devices/{id}/commands`` for distinct
devices (``--count`` of them, each once per round) and reads the synchronous answer; between
rounds every queued command is recalled through the API (outside the measured window). Reported
per round: enqueues per second, p50/p99/max, and the server process's CPU per enqueue (user +
system time from /proc, the whole process: any background work of the server is counted too):

    python scripts/enqueue-loop.py --data-dir /tmp/enq/b2k [--database-url postgresql+asyncpg://...]
        [--count 1000] [--rounds 3] [--concurrency 16] [--command Block] [--py-spy out.raw]

``--py-spy FILE`` records the server (raw format) during the measured windows of every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from mdm.bench import local, profile
from mdm.bench.stats import cpu_seconds, load_average
from mdm.sim.transport import client_context


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _device_ids(session: aiohttp.ClientSession, base: str, count: int) -> list[int]:
    ids: list[int] = []
    cursor: str | None = None
    while len(ids) < count:
        params = {"protocol": "ios", "limit": "500", **({"cursor": cursor} if cursor else {})}
        async with session.get(f"{base}/devices", params=params) as response:
            page = await response.json()
        ids += [d["id"] for d in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return ids[:count]


async def _round(
    session: aiohttp.ClientSession, base: str, ids: list[int], command: str, concurrency: int, pid: int
) -> tuple[dict[str, Any], list[str]]:
    todo = iter(ids)
    latencies: list[float] = []
    guids: list[str] = []
    errors: dict[str, int] = {}

    async def flow() -> None:
        for device_id in todo:
            t0 = time.perf_counter()
            async with session.post(f"{base}/devices/{device_id}/commands", json={"type": command}) as r:
                body = await r.json()
                if r.status != 201:
                    key = f"{r.status} {body.get('code', '')}"
                    errors[key] = errors.get(key, 0) + 1
                    continue
            latencies.append(time.perf_counter() - t0)
            guids.append(body["guid"])

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(flow() for _ in range(concurrency)))
    cpu1, elapsed = cpu_seconds(pid), time.perf_counter() - t0
    ms = [s * 1000 for s in latencies]
    out = {
        "enqueues": len(ms), "per_second": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p99_ms": round(_percentile(ms, 0.99), 1), "max_ms": round(max(ms, default=0.0), 1),
        "server_cpu_ms_per_enqueue": round((cpu1 - cpu0) * 1000 / max(1, len(ms)), 3)
        if cpu0 is not None and cpu1 is not None else None,
        "errors": errors,
    }
    return out, guids


async def _recall(session: aiohttp.ClientSession, base: str, guids: list[str], concurrency: int) -> None:
    todo = iter(guids)

    async def flow() -> None:
        for guid in todo:
            async with session.delete(f"{base}/commands/{guid}") as r:
                await r.read()

    await asyncio.gather(*(flow() for _ in range(concurrency)))


async def main(args: argparse.Namespace) -> None:
    config = local.prepare(args.data_dir, database_url=args.database_url)
    server = local.LocalServer(config)
    await server.start()
    try:
        roots = x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())
        base = server.url("admin") + "/api/v1"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(roots), limit=args.concurrency * 2),
            headers={"Authorization": f"Bearer {local.admin_token(args.data_dir)}"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as session:
            ids = await _device_ids(session, base, args.count)
            # A warm-up round (connections, caches), not reported.
            _, guids = await _round(session, base, ids[: args.concurrency * 4], args.command,
                                    args.concurrency, server.pid)
            await _recall(session, base, guids, args.concurrency)
            rounds = []
            for number in range(args.rounds):
                spy = None
                if args.py_spy is not None:
                    out = args.py_spy.with_name(f"{args.py_spy.stem}-{number}{args.py_spy.suffix}")
                    spy = await profile.record(server.pid, 3600, out)
                    await asyncio.sleep(0.5)
                result, guids = await _round(session, base, ids, args.command, args.concurrency, server.pid)
                if spy is not None:
                    spy.send_signal(2)
                    await spy.wait()
                result["load"] = load_average()
                rounds.append(result)
                print(json.dumps(result), flush=True)
                await _recall(session, base, guids, args.concurrency)
    finally:
        await server.stop()
    if args.json:
        print(json.dumps({"rounds": rounds}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--command", default="Block")
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    asyncio.run(main(parser.parse_args()))
