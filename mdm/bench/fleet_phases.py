"""The measured phases of ``mdm bench fleet`` on a running server: (b) the bulk command to every
device, (c) its wake-ups accepted by the APNs fake and (d) the answering devices polling when
their push arrives, all from one clock started at the request; then (e) idle polls, (f) device
list pages and (g) a check-in storm. The server's RSS is sampled every second throughout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mdm.bench.fleet_apns import FakeProcess
from mdm.bench.fleet_prepare import push_token
from mdm.bench.phases import Admin
from mdm.bench.progress import Progress, timed
from mdm.bench.stats import cpu_seconds, rss_kib
from mdm.sim.fleet import Fleet, FleetError, Member
from mdm.sim.stats import Samples, percentile

Say = Callable[[str], None]
LONG = aiohttp.ClientTimeout(total=3600)


class PhaseError(Exception):
    pass


# ---- the server's memory and CPU -----------------------------------------------------------------------


@dataclass
class Monitor:
    """VmRSS of the server every ``interval`` seconds (KiB, with the bench's clock)."""

    pid: int
    interval: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            rss = rss_kib(self.pid).get("VmRSS")
            if rss is not None:
                self.samples.append((time.perf_counter(), rss))
            await asyncio.sleep(self.interval)

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [kib for t, kib in self.samples if start <= t <= end] or [self.samples[-1][1]]
        return {"start_mib": round(inside[0] / 1024, 1), "peak_mib": round(max(inside) / 1024, 1),
                "end_mib": round(inside[-1] / 1024, 1)}


@contextlib.asynccontextmanager
async def monitoring(pid: int) -> AsyncIterator[Monitor]:
    monitor = Monitor(pid)
    task = asyncio.create_task(monitor.run())
    try:
        yield monitor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _cpu(pid: int) -> float:
    return cpu_seconds(pid) or 0.0


# ---- (b) bulk, (c) wake-ups, (d) answers --------------------------------------------------------------


@dataclass
class Timeline:
    """What happened after the bulk request, in seconds from it."""

    t0: float
    queued_s: float | None = None
    woken_s: float | None = None
    status: dict[str, Any] = field(default_factory=dict)
    completions: list[float] = field(default_factory=list)  # seconds from the request
    latencies: list[float] = field(default_factory=list)  # push accepted -> answer accepted
    errors: dict[str, int] = field(default_factory=dict)
    answers_started: float | None = None
    answers_ended: float | None = None
    answered: set[str] = field(default_factory=set)  # the UDIDs whose answer was accepted

    def since(self) -> float:
        return time.perf_counter() - self.t0


async def _request_bulk(admin: Admin, command: str) -> tuple[int | None, dict[str, Any], int]:
    async with admin.session.post(f"{admin.base}/commands", json={"devices": "all", "type": command},
                                  timeout=LONG) as response:
        body = await response.json(content_type=None)
        if response.status not in (201, 202):
            raise PhaseError(f"POST /commands answered {response.status}: {str(body)[:300]}")
    if response.status == 201:  # the synchronous API: everything was queued in the request
        return None, {"state": "queued", "queued": len(body.get("created", [])),
                      "skipped": len(body.get("skipped", []))}, 201
    bulk_id = body.get("id", body.get("bulk_id"))
    if bulk_id is None:
        raise PhaseError(f"POST /commands answered 202 without a bulk id: {str(body)[:300]}")
    return int(bulk_id), body, 202


async def bulk_status(admin: Admin, bulk_id: int) -> dict[str, Any]:
    async with admin.session.get(f"{admin.base}/bulk/{bulk_id}") as response:
        if response.status != 200:
            raise PhaseError(f"GET /bulk/{bulk_id} answered {response.status}: {await response.text()}")
        return dict(await response.json())


async def bulk_and_answers(
    admin: Admin, fake: FakeProcess, fleet: Fleet, members: list[Member], *, devices: int, command: str,
    concurrency: int, limit_s: float, say: Say, pid: int, monitor: Monitor,
    on_bulk: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    by_token = {push_token(m.udid): m for m in members}
    await fake.watch(list(by_token))
    _, seen = await fake.woken(0)  # pushes from earlier runs are not this run's
    accepted0 = int((await fake.stats())["accepted"])
    cpu0 = _cpu(pid)
    line = Timeline(time.perf_counter())
    bulk_id, status, code = await _request_bulk(admin, command)
    if bulk_id is not None and on_bulk is not None:
        on_bulk(bulk_id)
    line.status = status
    if code == 201:
        line.queued_s = line.since()
    cpu_queued: float | None = _cpu(pid) if code == 201 else None
    limit = asyncio.Semaphore(concurrency)
    started: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()
    completed = Progress(say, "(d) answers", len(members), interval=2.0)
    cpu_answers: list[float] = []

    async def answer(member: Member) -> None:
        async with limit:
            woke = time.perf_counter()
            if line.answers_started is None:
                line.answers_started = woke
                cpu_answers.append(_cpu(pid))
            try:
                statuses = await fleet.poll_and_answer(member)
                if not statuses or statuses[0] != ("DeviceLock", "Acknowledged"):
                    raise FleetError(f"first exchange was {statuses[:1]}")
            except (FleetError, aiohttp.ClientError, TimeoutError) as exc:
                kind = type(exc).__name__ if not isinstance(exc, FleetError) else str(exc)[:60]
                line.errors[kind] = line.errors.get(kind, 0) + 1
                return
            now = time.perf_counter()
            line.latencies.append(now - woke)
            line.completions.append(now - line.t0)
            line.answers_ended = now
            line.answered.add(member.udid)
            completed.advance()

    async def follow_pushes() -> None:
        nonlocal seen
        last = False
        while len(started) < len(by_token) and not last:
            # Every wake-up of the operation accepted: one more look, then no more to come (a
            # device skipped for an earlier command still active is never woken by this one).
            last = line.woken_s is not None
            tokens, seen = await fake.woken(seen)
            for token in tokens:
                if token in by_token and token not in started:
                    started.add(token)
                    task = asyncio.create_task(answer(by_token[token]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.05)

    async def follow_counts() -> None:
        nonlocal cpu_queued
        woken = Progress(say, "(c) wake-ups accepted", devices, interval=2.0)
        queued = Progress(say, "(b) queued", devices, interval=2.0)
        expected = devices  # until queuing ends; then what it queued (skipped devices are not woken)
        while line.woken_s is None or line.queued_s is None:
            if line.woken_s is None:
                accepted = int((await fake.stats())["accepted"]) - accepted0
                woken.update(accepted)
                if accepted >= expected:
                    line.woken_s = line.since()
                    woken.finish()
            if line.queued_s is None and bulk_id is not None:
                try:
                    line.status = await bulk_status(admin, bulk_id)
                except (TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(0.25)  # a busy server: asked again
                    continue
                queued.update(int(line.status.get("queued", 0)) + int(line.status.get("skipped", 0)))
                if line.status.get("state") != "queuing":
                    line.queued_s = line.since()
                    cpu_queued = _cpu(pid)
                    queued.finish()
                    expected = min(devices, int(line.status.get("queued", devices)))
            await asyncio.sleep(0.25)

    followers = [asyncio.create_task(follow_pushes()), asyncio.create_task(follow_counts())]
    try:
        async with asyncio.timeout(limit_s):
            await followers[1]
            await followers[0]
            while tasks:
                await asyncio.gather(*list(tasks))
    except TimeoutError:
        say(f"(b-d) stopped after {limit_s:.0f}s: queued at {line.queued_s}, woken at {line.woken_s}, "
            f"{len(line.completions)}/{len(members)} answered")
    finally:
        for task in [*followers, *tasks]:
            task.cancel()
        await asyncio.gather(*followers, *tasks, return_exceptions=True)
    completed.finish()
    cpu_end = _cpu(pid)
    if bulk_id is not None:
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):  # else the last status read
            line.status = await bulk_status(admin, bulk_id)
    return _bulk_report(line, bulk_id, members, devices, cpu0, cpu_queued, cpu_answers, cpu_end, monitor)


def _bulk_report(line: Timeline, bulk_id: int | None, members: list[Member], devices: int, cpu0: float,
                 cpu_queued: float | None, cpu_answers: list[float], cpu_end: float,
                 monitor: Monitor) -> dict[str, Any]:
    done = sorted(line.completions)
    latencies = sorted(line.latencies)

    def at(fraction: float) -> float | None:
        need = max(1, int(len(members) * fraction + 0.999999))
        return round(done[need - 1], 2) if len(done) >= need else None

    queued_end = line.t0 + (line.queued_s or line.since())
    answer_window = ((line.answers_ended or 0) - (line.answers_started or 0)) if done else 0.0
    report: dict[str, Any] = {
        "bulk": {
            "api": "202 + GET /bulk/{id}" if bulk_id is not None else "201 (synchronous)",
            "bulk_id": bulk_id, "devices": devices, "queued_s": _r(line.queued_s),
            "queued_per_s": round(devices / line.queued_s, 1) if line.queued_s else None,
            "server_cpu_us_per_device": round((cpu_queued - cpu0) * 1e6 / devices, 1)
            if cpu_queued is not None else None,
            "rss": monitor.window(line.t0, queued_end), "status": line.status,
        },
        "wakeups": {"accepted_s": _r(line.woken_s),
                    "per_s": round(devices / line.woken_s, 1) if line.woken_s else None},
        "answers": {
            "answering": len(members), "completed": len(done), "errors": line.errors,
            "p50_done_s": at(0.5), "p99_done_s": at(0.99), "all_done_s": at(1.0),
            "round_trips_per_s": round(len(done) / answer_window, 1) if answer_window > 0 else None,
            "server_cpu_ms_per_round_trip": round((cpu_end - cpu_answers[0]) * 1000 / len(done), 2)
            if done and cpu_answers else None,
            "overlaps_queuing_or_pushing": bool(done) and (line.answers_started or 0) < max(
                queued_end, line.t0 + (line.woken_s or 0)),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        },
        "answered": line.answered,
    }
    return report


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# ---- (e) idle polls ---------------------------------------------------------------------------------


async def idle(fleet: Fleet, members: list[Member], *, duration: float, concurrency: int, say: Say,
               pid: int) -> dict[str, Any]:
    """Closed-loop idle polls over distinct devices whose queues are empty (as ``mdm bench ios``)."""
    say(f"(e) idle polls from {len(members)} devices ({concurrency} connections) for {duration:.0f}s...")
    samples = Samples()
    cpu0 = _cpu(pid)
    ticker = asyncio.create_task(timed(say, "(e) idle", duration, lambda: samples.count, interval=5.0))
    try:
        await fleet.idle_load(duration, concurrency=concurrency, samples=samples, members=members)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    summary = samples.summary()
    if samples.count:
        summary["server_cpu_us_per_poll"] = round((_cpu(pid) - cpu0) * 1e6 / samples.count, 1)
    return summary


# ---- (f) device list pages ------------------------------------------------------------------------------


async def pages(admin: Admin, *, devices: int, first_id: int, group_id: int | None, probe: str,
                repeat: int, say: Say) -> dict[str, Any]:
    say("(f) GET /devices pages...")
    queries: dict[str, dict[str, str]] = {
        "first_page": {"limit": "100"},
        "deep_page": {"limit": "100", "cursor": str(first_id + int(devices * 0.9))},
        "status_ok": {"limit": "100", "status": "ok"},
        "protocol_ios": {"limit": "100", "protocol": "ios"},
        "q_identifier": {"limit": "100", "q": probe},
    }
    if group_id is not None:
        queries["group"] = {"limit": "100", "group": str(group_id)}
    out: dict[str, Any] = {}
    for name, params in queries.items():
        times, items = [], 0
        for _ in range(repeat):
            t = time.perf_counter()
            async with admin.session.get(f"{admin.base}/devices", params=params) as response:
                body = await response.json()
                if response.status != 200:
                    raise PhaseError(f"GET /devices {params} answered {response.status}: {body}")
            times.append(time.perf_counter() - t)
            items = len(body["items"])
        times.sort()
        out[name] = {"items": items, "p50_ms": round(percentile(times, 50) * 1000, 1),
                     "max_ms": round(times[-1] * 1000, 1)}
    return out


# ---- (g) check-in storm and cold polls -------------------------------------------------------------------


async def storm(fleet: Fleet, members: list[Member], *, say: Say, pid: int) -> dict[str, Any]:
    say(f"(g) check-in storm: Authenticate + TokenUpdate for {len(members)} devices...")
    queue = iter(members)
    errors: dict[str, int] = {}
    cpu0, t0 = _cpu(pid), time.perf_counter()
    checked = Progress(say, "(g) checked in", len(members), interval=5.0)

    async def worker() -> None:
        for member in queue:
            try:
                await fleet.check_in(member)
                checked.advance()
            except (FleetError, aiohttp.ClientError, TimeoutError) as exc:
                kind = type(exc).__name__ if not isinstance(exc, FleetError) else str(exc)[-60:]
                errors[kind] = errors.get(kind, 0) + 1

    await asyncio.gather(*(worker() for _ in range(fleet.concurrency)))
    checked.finish()
    elapsed = time.perf_counter() - t0
    return {"devices": len(members), "seconds": round(elapsed, 2),
            "messages_per_s": round(2 * checked.done / elapsed, 1), "errors": errors,
            "server_cpu_ms_per_message": round((_cpu(pid) - cpu0) * 1000 / max(1, 2 * checked.done), 2)}
