#!/usr/bin/env python3
"""Cold first polls over HTTP: a freshly started ``mdm serve``, one signed Idle poll per device.

Developer tool behind the cold-poll figures in docs/PERFORMANCE.md (issue 12, "cold first polls at
>= 1,500/s"). It works on a data directory prepared by ``mdm bench ios --data-dir DIR`` whose
devices have checked in (their identities in ``bench/devices.jsonl``). The iOS listener is put in
plain-HTTP mode (TLS is a proxy's job in that figure) and the server is started for each round,
so that every round is a cold pass: no cached chain verdict, signer key or binding.

Every body is signed before the server starts (the device's cost, not the server's). The figure
that matters is the server's CPU per poll (``/proc/PID/stat``, all threads): the load generator
shares the machine's cores, so the wall-clock rate is a lower bound::

    python scripts/cold-poll-http.py --data-dir /tmp/cold-sqlite --count 2000 --rounds 2

``--fleet`` takes a data directory of ``mdm bench fleet`` instead (its first N devices, in a fleet
of 10^4, 10^5 or 10^6): the same pass at each fleet size. ``--tail S`` keeps measuring the server
for S seconds after the pass and reports that CPU per poll apart: the write-behind of the polls'
``last_seen_at`` (``ios.last_seen_flush_seconds``, 5 s by default) and the WAL checkpoints it
causes, work a poll costs that lands after its answer. ``--warm`` then sends the same polls again
(caches warm: the idle poll of a device with nothing queued) and reports that pass too.

On PostgreSQL it also reports the CPU of the server's backends per poll (``/proc/PID/schedstat``
of every backend connected to the fleet's database, in the pass and in ``--tail``, where the
write-behind of the pass's last seconds lands) and how many of the pass's updates of ``devices`` were
HOT (``pg_stat_user_tables``, read after the tail: give it a few seconds for the backends to
report their counters); ``--detail`` lists each backend's share of the pass, and whether it
connected during it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from mdm.bench import fleet_prepare, identities, local
from mdm.bench.stats import cpu_seconds
from mdm.config import Config
from mdm.sim.stats import percentile
from mdm.sim.transport import COMMAND_TYPE

Signed = tuple[bytes, dict[str, str]]


async def burst(url: str, polls: list[Signed], concurrency: int) -> tuple[list[float], dict[str, int]]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue = iter(polls)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for body, headers in queue:
                t0 = time.perf_counter()
                try:
                    async with session.put(url, data=body, headers=headers) as response:
                        payload = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if status != 200 or payload.strip():
                    key = f"http_{status}" if status != 200 else "unexpected_command"
                    errors[key] = errors.get(key, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def _schedstat(pids: list[int]) -> dict[int, int]:
    """Nanoseconds each process spent on a CPU (/proc/PID/schedstat; gone ones left out)."""
    cpu: dict[int, int] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as fh:
                cpu[pid] = int(fh.read().split()[0])
        except OSError:
            continue
    return cpu


class Backends:
    """The PostgreSQL backends serving the fleet's database: their CPU and ``devices``' updates."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cpu: dict[int, int] = {}
        self.updates = (0, 0)
        self.last: dict[int, tuple[int, bool]] = {}

    @classmethod
    async def open(cls, config: Config) -> Backends | None:
        url = config.database_url
        if not url.startswith("postgresql"):
            return None
        import asyncpg

        return cls(await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql", 1)))

    async def _sample(self) -> tuple[dict[int, int], tuple[int, int]]:
        pids = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        cpu = _schedstat([int(row["pid"]) for row in pids])
        await self.conn.execute("SELECT pg_stat_clear_snapshot()")
        stats = await self.conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'devices'"
        )
        return cpu, (int(stats["n_tup_upd"]), int(stats["n_tup_hot_upd"]))

    async def start(self) -> None:
        self.cpu, self.updates = await self._sample()

    async def lap(self) -> float:
        """Backend CPU seconds since ``start`` or the last lap (backends started since: all theirs)."""
        cpu, _ = await self._sample()
        spent = sum(ns - self.cpu.get(pid, 0) for pid, ns in cpu.items()) / 1e9
        self.last = {pid: (ns - self.cpu.get(pid, 0), pid not in self.cpu) for pid, ns in cpu.items()}
        self.cpu = cpu
        return spent

    def detail(self, polls: int) -> list[str]:
        """The last lap per backend: µs per poll, and whether it connected during the lap."""
        rows = sorted(self.last.items(), key=lambda item: -item[1][0])
        return [f"  backend {pid}: {ns / 1e3 / max(1, polls):,.1f} µs per poll"
                + (" (connected in the pass)" if new else "") for pid, (ns, new) in rows if ns]

    async def stop(self) -> tuple[float, int, int]:
        """Backend CPU seconds since the last lap, updates and HOT updates since ``start``."""
        cpu, updates = await self._sample()
        spent = sum(ns - self.cpu.get(pid, 0) for pid, ns in cpu.items()) / 1e9
        return spent, updates[0] - self.updates[0], updates[1] - self.updates[1]

    async def close(self) -> None:
        await self.conn.close()


async def run(args: argparse.Namespace) -> None:
    config = local.prepare(args.data_dir, plain=True)
    if args.fleet:
        members: list[Any] = await fleet_prepare.driven_members(config, args.count)
    else:
        members = identities.load(identities.cache_path(config), [])[: args.count]
    if not members:
        raise SystemExit(f"no bench identities in {args.data_dir}: prepare it with mdm bench ios")
    for round_ in range(1, args.rounds + 1):
        polls: list[Signed] = []
        for member in members:  # signed now: the signing time must be recent
            body, headers = member.signed({"Status": "Idle", "UDID": member.udid}, COMMAND_TYPE)
            polls.append((body, headers))
        server = local.LocalServer(config)
        await server.start(wait_s=120)
        backends: Backends | None = None
        pg = None
        warm_backends = 0.0
        try:
            backends = await Backends.open(config)
            await asyncio.sleep(args.settle)
            if backends is not None:
                await backends.start()
            cpu_idle0, t_idle0 = cpu_seconds(server.pid) or 0.0, time.perf_counter()
            await asyncio.sleep(2.0)
            idle_rate = ((cpu_seconds(server.pid) or 0.0) - cpu_idle0) / (time.perf_counter() - t_idle0)
            # The backends' CPU while the server idles (its workers' statements), per second.
            idle_backends = 0.0
            if backends is not None:
                idle_backends = (await backends.lap()) / (time.perf_counter() - t_idle0)
            spy = None
            if args.py_spy:
                py_spy = str(Path(sys.executable).with_name("py-spy"))
                spy = await asyncio.create_subprocess_exec(
                    py_spy, "record", "--pid", str(server.pid), "--rate", "500", "--format", "raw",
                    "--output", f"{args.py_spy}.{round_}", *(["--native"] if args.native else []),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            if backends is not None:
                await backends.lap()
            cpu0, t0 = cpu_seconds(server.pid) or 0.0, time.perf_counter()
            latencies, errors = await burst(server.url("ios") + "/mdm/server", polls, args.concurrency)
            wall = time.perf_counter() - t0
            cpu = (cpu_seconds(server.pid) or 0.0) - cpu0
            pass_backends = await backends.lap() if backends is not None else 0.0
            pass_detail = backends.detail(len(latencies)) if backends is not None and args.detail else []
            tail = 0.0
            if args.tail > 0:
                await asyncio.sleep(args.tail)
                tail = (cpu_seconds(server.pid) or 0.0) - cpu0 - cpu - idle_rate * args.tail
            if backends is not None:
                pg = await backends.stop()
                pg = (pg[0] - idle_backends * args.tail, pg[1], pg[2])
                pass_backends -= idle_backends * wall
            warm = None
            if args.warm:
                cpu1, t1 = cpu_seconds(server.pid) or 0.0, time.perf_counter()
                endpoint = server.url("ios") + "/mdm/server"
                warm_latencies, warm_errors = await burst(endpoint, polls, args.concurrency)
                warm_wall = time.perf_counter() - t1
                warm = (warm_latencies, warm_errors, warm_wall, (cpu_seconds(server.pid) or 0.0) - cpu1)
                if args.tail > 0:  # the warm pass's write-behind
                    await asyncio.sleep(args.tail)
                warm_backends = (await backends.lap()) - idle_backends * (
                    time.perf_counter() - t1) if backends is not None else 0.0
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await spy.wait()
        finally:
            if backends is not None:
                await backends.close()
            await server.stop()
        n = max(1, len(latencies))
        latencies.sort()
        print(
            f"round {round_}: {len(latencies)} cold polls in {wall:.2f} s = {len(latencies) / wall:,.0f}/s, "
            f"server CPU {1e6 * cpu / n:,.0f} µs per poll ({n / cpu if cpu else 0:,.0f}/s of one core; "
            f"{1e6 * max(0.0, cpu - idle_rate * wall) / n:,.0f} µs without the idle server's "
            f"{1000 * idle_rate:.0f} ms/s), p50 {1000 * percentile(latencies, 50):.1f} ms, "
            f"p99 {1000 * percentile(latencies, 99):.1f} ms, errors {errors or 'none'}"
            + (f"; then {1e6 * max(0.0, tail) / n:,.0f} µs per poll in the {args.tail:g} s after it"
               " (write-behind), without the idle rate" if args.tail > 0 else "")
        )
        if pg is not None:
            spent, updates, hot = pg
            print(
                f"round {round_} PostgreSQL: backends' CPU per poll {1e6 * pass_backends / n:,.0f} µs"
                f" in the pass + {1e6 * spent / n:,.0f} in the tail (without the idle server's"
                f" {1000 * idle_backends:.0f} ms/s), "
                f"devices updated {updates:,}, HOT {hot:,} ({100 * hot / updates if updates else 0:.0f} %)"
            )
            for line in pass_detail:
                print(line)
        if warm is not None:
            warm_latencies, warm_errors, warm_wall, warm_cpu = warm
            m = max(1, len(warm_latencies))
            warm_latencies.sort()
            print(
                f"round {round_} warm: {len(warm_latencies)} polls in {warm_wall:.2f} s = "
                f"{m / warm_wall:,.0f}/s, server CPU {1e6 * warm_cpu / m:,.0f} µs per poll, "
                f"p50 {1000 * percentile(warm_latencies, 50):.1f} ms, "
                f"p99 {1000 * percentile(warm_latencies, 99):.1f} ms, errors {warm_errors or 'none'}"
                + (f"; backends' CPU {1e6 * warm_backends / m:,.0f} µs per poll with the tail"
                   if backends is not None else "")
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="a data directory prepared by mdm bench ios"
    )
    parser.add_argument("--count", type=int, default=2000, help="devices (the first N of the bench fleet)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--rounds", type=int, default=2, help="server starts, one cold pass each")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after start-up before measuring")
    parser.add_argument("--fleet", action="store_true", help="a data directory of mdm bench fleet")
    parser.add_argument("--tail", type=float, default=0.0, help="seconds measured after the pass")
    parser.add_argument("--warm", action="store_true", help="a second pass of the same polls")
    parser.add_argument("--detail", action="store_true",
                        help="PostgreSQL: each backend's CPU per poll in the pass")
    parser.add_argument("--py-spy", help="record the server with py-spy (raw stacks) to FILE.<round>")
    parser.add_argument("--native", action="store_true", help="py-spy with C frames (SQLite's, OpenSSL's)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
