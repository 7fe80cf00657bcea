"""The phases of ``mdm bench ios``: preparing the fleet (identities, enrollments, check-ins,
warm-up), (a) idle polls and (b) command round trips, each telling its progress."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from cryptography import x509

from mdm.bench import identities, wrk
from mdm.bench.model import AdminError, Options, Report, Say
from mdm.bench.progress import Progress, timed
from mdm.config import Config
from mdm.sim import profile as profiles
from mdm.sim.device import fetch_profile
from mdm.sim.facts import HardwareFacts
from mdm.sim.fleet import Fleet, FleetError, Member
from mdm.sim.stats import Samples
from mdm.sim.transport import client_context

# Round-trip commands that are not library command names: what is queued for them.
RT_COMMANDS: dict[str, tuple[str, dict[str, object]]] = {
    # One DeviceInformation step with the default queries (about 30 on iOS), answered in full.
    "DeviceInformation": ("RefreshDeviceInfo", {"parts": ["device_info"]}),
}

# ---- admin API ------------------------------------------------------------------------------------


class Admin:
    def __init__(self, base: str, token: str, roots: list[x509.Certificate]) -> None:
        self.base = base.rstrip("/") + "/api/v1"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(roots) if base.startswith("https") else False),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def close(self) -> None:
        await self.session.close()

    async def device_ids(self) -> dict[str, int]:
        ids: dict[str, int] = {}
        cursor: str | None = None
        while True:
            params = {"protocol": "ios", "limit": "500", **({"cursor": cursor} if cursor else {})}
            async with self.session.get(f"{self.base}/devices", params=params) as response:
                if response.status != 200:
                    raise AdminError(f"GET /devices answered {response.status}: {await response.text()}")
                page = await response.json()
            ids.update({d["identifier"]: d["id"] for d in page["items"]})
            cursor = page.get("next_cursor")
            if not cursor:
                return ids

    async def send(self, device_id: int, type_: str) -> str:
        queued, args = RT_COMMANDS.get(type_, (type_, {}))
        async with self.session.post(
            f"{self.base}/devices/{device_id}/commands", json={"type": queued, "args": args}
        ) as response:
            if response.status != 201:
                raise FleetError(
                    f"enqueue {type_} for device {device_id}: {response.status} {await response.text()}"
                )
            return str((await response.json())["guid"])

    async def push_configured(self, service: str) -> bool:
        """Whether the server has a transport for ``service`` ("apns", "fcm"): its push status."""
        async with self.session.get(f"{self.base}/push/status") as response:
            if response.status != 200:
                raise AdminError(f"GET /push/status answered {response.status}: {await response.text()}")
            return bool((await response.json())["services"][service]["configured"])

    async def command_status(self, guid: str) -> str:
        async with self.session.get(f"{self.base}/commands/{guid}") as response:
            return str((await response.json())["status"])

    async def enrollment_url(self, user: str) -> str:
        async with self.session.post(f"{self.base}/enrollments", json={"platform": "ios", "user": user}) as r:
            if r.status != 201:
                raise AdminError(f"POST /enrollments answered {r.status}: {await r.text()}")
            return str((await r.json())["url"])


# ---- preparation ---------------------------------------------------------------------------------------


async def local_members(options: Options, config: Config, say: Say, report: Report) -> list[Member]:
    path = identities.cache_path(config)
    chain = x509.load_pem_x509_certificates((config.ca_dir / "issuing.pem").read_bytes())
    cached = identities.load(path, chain)
    seeds = identities.seeds_of(path)
    missing = options.devices - len(cached)
    report.prepare["identities_cached"] = min(len(cached), options.devices)
    if missing > 0:
        say(f"issuing {missing} device identities ({options.key_type}) through the service layer...")
        t0 = time.perf_counter()
        first = (max(seeds) + 1) if seeds else 0
        issued = Progress(say, "issuing identities", missing, interval=options.progress_interval)
        fresh = await identities.issue_bulk(
            config, missing, key_type=options.key_type, first_seed=first, progress=issued.update
        )
        issued.finish()
        report.prepare["identities_issued"] = missing
        report.prepare["issue_s"] = round(time.perf_counter() - t0, 1)
        cached += fresh
        seeds += list(range(first, first + missing))
        identities.save(path, cached, seeds)
    return cached[: options.devices]


async def remote_members(
    options: Options, admin: Admin, roots: list[x509.Certificate], say: Say, report: Report
) -> tuple[list[Member], str]:
    """One enrollment link per device through the admin API (the server generates each key)."""
    say(f"enrolling {options.devices} devices through the enrollment API (server-side key generation)...")
    t0 = time.perf_counter()
    members: list[Member] = []
    topic = ""
    order = iter(range(options.devices))
    enrolled = Progress(say, "enrolling", options.devices, interval=options.progress_interval)

    async def worker() -> None:
        nonlocal topic
        for i in order:
            data = await fetch_profile(await admin.enrollment_url(f"bench-{i}"), roots)
            profile = profiles.parse_enrollment(data, roots or None)
            identity = profiles.identity_from_pkcs12(profile.identity_payload)
            topic = profile.mdm.topic
            members.append(Member(HardwareFacts.generate(random.Random(i)), identity))  # noqa: S311
            enrolled.advance()

    await asyncio.gather(*(worker() for _ in range(options.enroll_concurrency)))
    enrolled.finish()
    report.prepare["enroll_s"] = round(time.perf_counter() - t0, 1)
    return members, topic


async def check_in_missing(fleet: Fleet, admin: Admin, say: Say, report: Report, interval: float) -> None:
    known = await admin.device_ids()
    missing = [m for m in fleet.members if m.udid not in known]
    report.prepare["already_checked_in"] = len(fleet.members) - len(missing)
    if missing:
        say(f"checking in {len(missing)} devices (Authenticate + TokenUpdate)...")
        t0 = time.perf_counter()
        checked = Progress(say, "checking in", len(missing), interval=interval)
        queue = iter(missing)

        async def worker() -> None:
            for member in queue:
                await fleet.check_in(member)
                checked.advance()

        await asyncio.gather(*(worker() for _ in range(fleet.concurrency)))
        checked.finish()
        elapsed = time.perf_counter() - t0
        report.prepare["checkins"] = len(missing)
        report.prepare["checkin_s"] = round(elapsed, 1)
        report.prepare["checkin_messages_per_s"] = round(2 * len(missing) / elapsed, 1)
        known = await admin.device_ids()
    for member in fleet.members:
        member.device_id = known.get(member.udid)
    absent = [m.udid for m in fleet.members if m.device_id is None]
    if absent:
        raise AdminError(f"{len(absent)} devices are unknown to the server after check-in (e.g. {absent[0]})")


async def warm_up(fleet: Fleet, say: Say, interval: float) -> Samples:
    """One idle poll per device, in slices so that progress can be told between them."""
    members = fleet.members
    size = max(200, 4 * fleet.concurrency)
    done = Progress(say, "warm-up polls", len(members), interval=interval)
    total = Samples()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for first in range(0, len(members), size):
        part = await fleet.warm_up(members[first:first + size])
        total.latencies += part.latencies
        total.errors.update(part.errors)
        done.update(min(len(members), first + size))
    total.elapsed = loop.time() - start
    done.finish()
    return total


# ---- phases ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _ticking(say: Say, label: str, duration: float, count: Callable[[], int] | None,
                   options: Options) -> AsyncIterator[None]:
    """Progress lines (elapsed, count, rate, ETA) while a timed phase runs."""
    task = asyncio.create_task(timed(say, label, duration, count, interval=options.progress_interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def idle_phase(options: Options, fleet: Fleet, say: Say, report: Report) -> None:
    if options.generator == "wrk":
        directory = Path(tempfile.mkdtemp(prefix="mdm-bench-wrk-"))
        try:
            script = wrk.emit(directory, fleet.members)
            say(
                f"(a) idle polls with wrk -t{options.wrk_threads} -c{options.wrk_connections}"
                f" for {options.duration:.0f}s..."
            )
            # wrk reports its counts at the end: the progress lines show the time only.
            async with _ticking(say, "(a) wrk", options.duration, None, options):
                result = await asyncio.to_thread(
                    wrk.run,
                    script,
                    fleet.server_url,
                    duration=int(options.duration),
                    threads=options.wrk_threads,
                    connections=options.wrk_connections,
                )
        finally:
            if options.keep_data:
                say(f"kept the wrk scripts in {directory}")
            else:
                shutil.rmtree(directory, ignore_errors=True)
        report.idle = {
            "generator": "wrk",
            "command": result["command"],
            "requests": result["requests"],
            "per_second": result["per_second"],
            "p50_ms": result["p50_us"] / 1000,
            "p90_ms": result["p90_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000,
            "max_ms": result["max_us"] / 1000,
            "errors": {
                k: result[k]
                for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")
                if result[k]
            },
        }
        return
    say(
        f"(a) idle polls from the Python fleet ({options.concurrency} connections)"
        f" for {options.duration:.0f}s..."
    )
    samples = Samples()
    async with _ticking(say, "(a) idle", options.duration, lambda: samples.count, options):
        await fleet.idle_load(options.duration, concurrency=options.concurrency, samples=samples)
    report.idle = {"generator": f"python ({options.concurrency} connections)", **samples.summary()}


async def round_trip_phase(options: Options, fleet: Fleet, admin: Admin, say: Say, report: Report) -> None:
    duration = options.rt_duration or options.duration
    say(
        f"(b) command round trips ({options.rt_command}, {options.rt_concurrency} concurrent)"
        f" for {duration:.0f}s"
        f" with {options.background_rate:.0f}/s background idle polls..."
    )
    rng = random.Random(42)  # noqa: S311
    # Round trips and background polls use disjoint halves of the fleet, so that a background poll
    # never picks up a command meant for a round trip.
    half = max(1, len(fleet.members) // 2)
    targets, idlers = fleet.members[:half], fleet.members[half:] or fleet.members[:half]
    busy: set[str] = set()
    samples = Samples()
    # Enqueue (admin API), Idle poll that fetches the command, the answer that completes it.
    steps = {"enqueue": Samples(), "poll_delivers": Samples(), "answer_accepted": Samples()}
    stop = asyncio.Event()
    guids: list[str] = []

    async def enqueue(member: Member) -> str:
        assert member.device_id is not None
        return await admin.send(member.device_id, options.rt_command)

    async def worker() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        while loop.time() < deadline:
            member = rng.choice(targets)
            if member.udid in busy:
                await asyncio.sleep(0)
                continue
            busy.add(member.udid)
            try:
                elapsed, guid, parts = await fleet.round_trip(member, enqueue)
                samples.add(elapsed)
                for step, seconds in zip(steps.values(), parts, strict=False):
                    step.add(seconds)
                guids.append(guid)
            except (FleetError, aiohttp.ClientError, TimeoutError) as exc:
                samples.error(type(exc).__name__ if not isinstance(exc, FleetError) else str(exc)[:80])
            finally:
                busy.discard(member.udid)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    background = (
        asyncio.create_task(
            fleet.idle_load(
                duration + 5,
                concurrency=max(2, options.concurrency // 4),
                rate=options.background_rate,
                stop=stop,
                members=idlers,
            )
        )
        if options.background_rate > 0 and len(fleet.members) > 1
        else None
    )
    async with _ticking(say, "(b) round trips", duration, lambda: samples.count, options):
        await asyncio.gather(*(worker() for _ in range(options.rt_concurrency)))
    samples.elapsed = loop.time() - t0
    stop.set()
    if background is not None:
        report.background = (await background).summary()
    # The server's own record must agree: every measured command completed.
    check = guids[:: max(1, len(guids) // 50)]
    statuses = [await admin.command_status(g) for g in check]
    report.round_trip = {
        "command": options.rt_command,
        "concurrency": options.rt_concurrency,
        **samples.summary(),
        "checked_completed": f"{statuses.count('completed')}/{len(statuses)}",
        "steps": {
            name: {k: v for k, v in st.summary().items() if k in ("p50_ms", "p90_ms", "p99_ms")}
            for name, st in steps.items()
        },
    }

