"""``mdm bench push``: APNs wake-ups per second from one process to the contract fake.

The fake runs in its own process (so that the client's CPU and memory are measured apart from the
server's) over real HTTP/2 with mutual TLS, with a test push CA and client certificate made in a
temporary directory. ``concurrency`` pushes are in flight at once over ``connections`` long-lived
connections.
"""

from __future__ import annotations

import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mdm.bench import apns_fake_process
from mdm.bench.stats import cpu_seconds
from mdm.devfakes.certs import identity_from_files
from mdm.push.apns import ApnsClient
from mdm.push.config import ApnsConfig
from mdm.push.types import Outcome, WakeTarget


class BenchError(Exception):
    pass


@dataclass
class PushReport:
    pushes: int
    concurrency: int
    connections: int
    seconds: float
    pushes_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_us_per_push: float
    client_rss_before_mb: float
    client_rss_after_mb: float
    fake_rss_mb: float
    fake_cpu_us_per_push: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    fake: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _rss_mb(pid: str | int = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * fraction))]


async def run(pushes: int, concurrency: int, connections: int, say: Callable[[str], None]) -> PushReport:
    with tempfile.TemporaryDirectory(prefix="mdm-bench-push-") as directory:
        try:
            async with apns_fake_process.started(directory) as fake:
                info, pid = fake.info, fake.process.pid
                say(f"APNs fake (pid {pid}) on {info['url']}")
                cpu_before = cpu_seconds(pid) or 0.0
                report = await _measure(info, pushes, concurrency, connections, say)
                report.fake_rss_mb = round(_rss_mb(pid), 1)
                # (includes the warm-up's share: at most 1000 pushes)
                used = (cpu_seconds(pid) or 0.0) - cpu_before
                report.fake_cpu_us_per_push = round(used / pushes * 1e6, 1)
        except apns_fake_process.FakeApnsError as exc:
            raise BenchError(str(exc)) from None
        err = fake.stderr
        for text in reversed(err.decode(errors="replace").splitlines()):
            if text.startswith("{"):
                report.fake = json.loads(text)
                break
        return report


async def _measure(info: dict[str, str], pushes: int, concurrency: int, connections: int,
                   say: Callable[[str], None]) -> PushReport:
    config = ApnsConfig.model_validate({"base_url": info["url"], "ca_file": info["ca_file"],
                                        "connections": connections})
    ident = await asyncio.to_thread(identity_from_files, Path(info["client_cert"]), Path(info["client_key"]))
    client = ApnsClient(config, ident)
    target = WakeTarget(device_id=1, token="ab" * 32, push_magic="6F6E2D8A-3B6C-4D4A-9E8B-2C1D0F1E2A3B")
    outcomes: dict[str, int] = {}
    try:
        warm = await asyncio.gather(*(client.send(target) for _ in range(min(1000, pushes))))
        if any(r.outcome is not Outcome.SENT for r in warm):
            raise BenchError(f"warm-up pushes failed: {warm[0]}")
        rss_before = _rss_mb()
        latencies: list[float] = []
        remaining = pushes
        clock = time.perf_counter

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = clock()
                result = await client.send(target)
                latencies.append(clock() - start)
                outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1

        say(f"{pushes} pushes, {concurrency} concurrent, {connections} connection(s)")
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        began = clock()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = clock() - began
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        rss_after = _rss_mb()
    finally:
        await client.close()
    latencies.sort()
    used = (cpu_after.ru_utime - cpu.ru_utime) + (cpu_after.ru_stime - cpu.ru_stime)
    return PushReport(
        pushes=pushes, concurrency=concurrency, connections=connections, seconds=round(seconds, 3),
        pushes_per_second=round(pushes / seconds, 1),
        p50_ms=round(_percentile(latencies, 0.5) * 1000, 2),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 2),
        max_ms=round((latencies[-1] if latencies else 0) * 1000, 2),
        client_cpu_us_per_push=round(used / pushes * 1e6, 1),
        client_rss_before_mb=round(rss_before, 1), client_rss_after_mb=round(rss_after, 1),
        fake_rss_mb=0.0, outcomes=outcomes,
    )


def render(report: PushReport) -> str:
    return "\n".join([
        f"pushes            {report.pushes} ({report.concurrency} concurrent, "
        f"{report.connections} connection(s)) in {report.seconds:.2f}s",
        f"throughput        {report.pushes_per_second:,.0f} pushes/s",
        f"latency           p50 {report.p50_ms:.2f} ms, p99 {report.p99_ms:.2f} ms, "
        f"max {report.max_ms:.2f} ms",
        f"client CPU        {report.client_cpu_us_per_push:.1f} µs per push",
        f"client RSS        {report.client_rss_before_mb:.1f} MB before, "
        f"{report.client_rss_after_mb:.1f} MB after",
        f"fake              {report.fake_cpu_us_per_push:.1f} µs CPU per push, "
        f"RSS {report.fake_rss_mb:.1f} MB",
        f"outcomes          {report.outcomes}",
        f"fake counters     {report.fake}",
    ])
