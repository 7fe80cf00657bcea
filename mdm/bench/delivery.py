"""Phase (b2) of ``mdm bench ios``: the device side of a command round trip alone, in rounds.

A round queues the command for ``Options.rt_delivery`` devices through the admin API (not timed,
its server CPU not counted), then lets ``Options.rt_concurrency`` flows poll, receive and answer
them (timed, the server's CPU counted). Rounds repeat with the same devices until the timed part
has used ``Options.rt_delivery_duration`` seconds (default ``--rt-duration``, else ``--duration``):
500 round trips last 1-2 s, too short to resolve 10-20 % on a shared machine, so the phase runs
for a duration and reports the spread of the per-round CPU figures next to their total.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mdm.bench.model import Options, Report, Say
from mdm.bench.phases import Admin
from mdm.sim.fleet import Fleet, FleetError
from mdm.sim.stats import Samples

Cpu = Callable[[], float | None]


@dataclass
class Rounds:
    """What the timed parts of the rounds did: round trips, seconds, the server's CPU."""

    rounds: int = 0
    round_trips: int = 0
    seconds: float = 0.0
    cpu_seconds: float | None = 0.0  # None once a reading was missing: no total then
    cpu_ms_per_round_trip: list[float] = field(default_factory=list)  # one figure per round

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rounds": self.rounds, "timed_s": round(self.seconds, 2)}
        if self.cpu_seconds is not None and self.round_trips:
            out["server_cpu_ms_per_round_trip"] = round(self.cpu_seconds * 1000 / self.round_trips, 2)
        if self.cpu_ms_per_round_trip:
            spread = self.cpu_ms_per_round_trip
            out["server_cpu_ms_per_round_trip_rounds"] = {
                "min": round(min(spread), 2),
                "median": round(statistics.median(spread), 2),
                "max": round(max(spread), 2),
            }
        return out


async def run_rounds(
    duration: float,
    queue: Callable[[], Awaitable[None]],
    deliver: Callable[[], Awaitable[int]],
    cpu: Cpu,
    clock: Callable[[], float] = time.perf_counter,
) -> Rounds:
    """Queue (untimed), then deliver (timed, CPU counted) until the delivering has used
    ``duration`` seconds; at least one round. ``deliver`` returns the round trips it completed;
    a round that completes none ends the phase (nothing would change by repeating it)."""
    done = Rounds()
    while done.rounds == 0 or done.seconds < duration:
        await queue()
        cpu0, t0 = cpu(), clock()
        count = await deliver()
        cpu1, t1 = cpu(), clock()
        done.rounds += 1
        done.round_trips += count
        done.seconds += t1 - t0
        if cpu0 is None or cpu1 is None or done.cpu_seconds is None:
            done.cpu_seconds = None
        elif count:
            done.cpu_seconds += cpu1 - cpu0
            done.cpu_ms_per_round_trip.append((cpu1 - cpu0) * 1000 / count)
        if not count:
            break
    return done


async def delivery_phase(
    options: Options, fleet: Fleet, admin: Admin, say: Say, report: Report, cpu: Cpu
) -> None:
    """The device side alone (the budget of issue 12 excludes the enqueue), in rounds of
    ``options.rt_delivery`` devices from the round-trip half of the fleet (no background load)."""
    half = max(1, len(fleet.members) // 2)
    members = fleet.members[:half][: options.rt_delivery]
    duration = options.rt_delivery_duration or options.rt_duration or options.duration
    say(
        f"(b2) delivery only: rounds of {options.rt_command} for {len(members)} devices, queued through"
        f" the API (untimed) then polled and answered by {options.rt_concurrency} flows,"
        f" for {duration:.0f}s of delivery..."
    )
    samples = Samples()
    failed: set[str] = set()  # a device whose round trip failed may still hold its command: left out

    async def queue() -> None:
        pending = iter([m for m in members if m.udid not in failed])

        async def enqueue() -> None:
            for member in pending:
                assert member.device_id is not None
                await admin.send(member.device_id, options.rt_command)

        await asyncio.gather(*(enqueue() for _ in range(8)))

    async def deliver() -> int:
        todo = iter([m for m in members if m.udid not in failed])
        before = samples.count

        async def device() -> None:
            for member in todo:
                t0 = time.perf_counter()
                try:
                    statuses = await fleet.poll_and_answer(member)
                    if not statuses or statuses[0][1] != "Acknowledged":
                        raise FleetError(f"{member.udid}: {statuses[:1] or 'nothing delivered'}")
                    samples.add(time.perf_counter() - t0)
                except (FleetError, aiohttp.ClientError, TimeoutError) as exc:
                    failed.add(member.udid)
                    samples.error(type(exc).__name__ if not isinstance(exc, FleetError) else str(exc)[:80])

        await asyncio.gather(*(device() for _ in range(options.rt_concurrency)))
        return samples.count - before

    done = await run_rounds(duration, queue, deliver, cpu)
    samples.elapsed = done.seconds
    report.delivery = {
        "command": options.rt_command,
        "concurrency": options.rt_concurrency,
        "round_size": len(members),
        **samples.summary(),
        **done.summary(),
    }
