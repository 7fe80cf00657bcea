"""``mdm bench ios``: simulated iOS devices as load generators.

Phases:
  prepare  identities for N devices (local: issued in bulk through the service layer and cached;
           remote: one enrollment link per device through the admin API), then Authenticate +
           TokenUpdate for those the server does not know yet;
  (a) idle steady idle polls with a real Mdm-Signature on every request (or mutual TLS), from the
           Python fleet or from wrk replaying precomputed signed bodies;
  (b) rt   command round trip: enqueue through the admin API -> the device polls at once (standing
           in for the APNs wake-up) -> Acknowledged accepted; under a background idle load;
  (c) rss  the server's VmRSS before and after, and its peak (VmHWM).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from cryptography import x509
from sqlalchemy.engine import make_url

from mdm.bench import identities, local, profile, wrk
from mdm.bench.stats import Samples, cpu_seconds, rss_kib
from mdm.sim import profile as profiles
from mdm.sim.device import fetch_profile
from mdm.sim.facts import HardwareFacts
from mdm.sim.fleet import Fleet, FleetError, Member
from mdm.sim.transport import Mode, client_context

Say = Callable[[str], None]


@dataclass
class Options:
    devices: int
    duration: float
    mode: Mode = "signature"
    plain: bool = False
    concurrency: int = 50
    url: str | None = None  # remote iOS listener, e.g. https://mdm.example.com
    admin_url: str | None = None
    token: str | None = None
    ca: Path | None = None
    server_pid: int | None = None
    database_url: str = ""
    data_dir: Path | None = None
    pool_size: int = 10
    key_type: identities.KeyType = "rsa"
    generator: Literal["python", "wrk"] = "python"
    wrk_threads: int = 2
    wrk_connections: int = 50
    emit_wrk: Path | None = None
    rt_command: str = "Block"
    rt_concurrency: int = 4
    rt_duration: float | None = None
    background_rate: float = 200.0
    enroll_concurrency: int = 4
    warmup: bool = True
    py_spy: Path | None = None  # record the server with py-spy during phase (a) into this file
    skip_idle: bool = False
    skip_rt: bool = False


@dataclass
class Report:
    setup: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    round_trip: dict[str, Any] = field(default_factory=dict)
    background: dict[str, Any] = field(default_factory=dict)
    rss_kib: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    profile_rt: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


class BenchError(Exception):
    """A usage problem (bad option combination)."""


class AdminError(Exception):
    """The server's admin API refused or failed a request the benchmark needs."""


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
        async with self.session.post(
            f"{self.base}/devices/{device_id}/commands", json={"type": type_}
        ) as response:
            if response.status != 201:
                raise FleetError(
                    f"enqueue {type_} for device {device_id}: {response.status} {await response.text()}"
                )
            return str((await response.json())["guid"])

    async def command_status(self, guid: str) -> str:
        async with self.session.get(f"{self.base}/commands/{guid}") as response:
            return str((await response.json())["status"])

    async def enrollment_url(self, user: str) -> str:
        async with self.session.post(f"{self.base}/enrollments", json={"platform": "ios", "user": user}) as r:
            if r.status != 201:
                raise AdminError(f"POST /enrollments answered {r.status}: {await r.text()}")
            return str((await r.json())["url"])


# ---- preparation ---------------------------------------------------------------------------------------


async def _local_members(options: Options, config: Any, say: Say, report: Report) -> list[Member]:
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
        fresh = await identities.issue_bulk(
            config,
            missing,
            key_type=options.key_type,
            first_seed=first,
            progress=lambda n: say(f"  {n}/{missing} issued") if n % 2000 == 0 else None,
        )
        report.prepare["identities_issued"] = missing
        report.prepare["issue_s"] = round(time.perf_counter() - t0, 1)
        cached += fresh
        seeds += list(range(first, first + missing))
        identities.save(path, cached, seeds)
    return cached[: options.devices]


async def _remote_members(
    options: Options, admin: Admin, roots: list[x509.Certificate], say: Say, report: Report
) -> tuple[list[Member], str]:
    """One enrollment link per device through the admin API (the server generates each key)."""
    say(f"enrolling {options.devices} devices through the enrollment API (server-side key generation)...")
    t0 = time.perf_counter()
    members: list[Member] = []
    topic = ""
    order = iter(range(options.devices))

    async def worker() -> None:
        nonlocal topic
        for i in order:
            data = await fetch_profile(await admin.enrollment_url(f"bench-{i}"), roots)
            profile = profiles.parse_enrollment(data, roots or None)
            identity = profiles.identity_from_pkcs12(profile.identity_payload)
            topic = profile.mdm.topic
            members.append(Member(HardwareFacts.generate(random.Random(i)), identity))  # noqa: S311

    await asyncio.gather(*(worker() for _ in range(options.enroll_concurrency)))
    report.prepare["enroll_s"] = round(time.perf_counter() - t0, 1)
    return members, topic


async def _check_in_missing(fleet: Fleet, admin: Admin, say: Say, report: Report) -> None:
    known = await admin.device_ids()
    missing = [m for m in fleet.members if m.udid not in known]
    report.prepare["already_checked_in"] = len(fleet.members) - len(missing)
    if missing:
        say(f"checking in {len(missing)} devices (Authenticate + TokenUpdate)...")
        t0 = time.perf_counter()
        await fleet.check_in_all(
            missing, progress=lambda n: say(f"  {n}/{len(missing)} checked in") if n % 2000 == 0 else None
        )
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


# ---- phases ----------------------------------------------------------------------------------------------


async def _idle_phase(options: Options, fleet: Fleet, say: Say, report: Report) -> None:
    if options.generator == "wrk":
        directory = Path(tempfile.mkdtemp(prefix="mdm-bench-wrk-"))
        script = wrk.emit(directory, fleet.members)
        say(
            f"(a) idle polls with wrk -t{options.wrk_threads} -c{options.wrk_connections}"
            f" for {options.duration:.0f}s..."
        )
        result = await asyncio.to_thread(
            wrk.run,
            script,
            fleet.server_url,
            duration=int(options.duration),
            threads=options.wrk_threads,
            connections=options.wrk_connections,
        )
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
    samples = await fleet.idle_load(options.duration, concurrency=options.concurrency)
    report.idle = {"generator": f"python ({options.concurrency} connections)", **samples.summary()}


async def _round_trip_phase(options: Options, fleet: Fleet, admin: Admin, say: Say, report: Report) -> None:
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


# ---- orchestration -----------------------------------------------------------------------------------------


def _engine_name(url: str) -> str:
    if not url:
        return "SQLite (embedded)"
    u = make_url(url)
    return (
        f"PostgreSQL ({u.host}:{u.port or 5432}/{u.database})"
        if u.drivername.startswith("postgresql")
        else url
    )


async def run(options: Options, say: Say) -> Report:
    if options.devices < 1 or options.duration <= 0:
        raise BenchError("--devices must be >= 1 and --duration > 0")
    if options.generator == "wrk" and options.mode == "mtls":
        raise BenchError("wrk cannot present per-device client certificates: use --mode signature with wrk")
    if options.plain and options.mode == "mtls":
        raise BenchError(
            "--plain (behind a TLS-terminating proxy) has no client certificates: use --mode signature"
        )
    report = Report()
    server: local.LocalServer | None = None
    roots: list[x509.Certificate] = []
    if options.ca:
        roots = x509.load_pem_x509_certificates(options.ca.read_bytes())
    if options.url is None:
        data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="mdm-bench-"))
        say(f"preparing {data_dir} ({_engine_name(options.database_url)})...")
        config = await asyncio.to_thread(
            local.prepare,
            data_dir,
            database_url=options.database_url,
            plain=options.plain,
            pool_size=options.pool_size,
        )
        roots = roots or x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())
        members = await _local_members(options, config, say, report)
        server = local.LocalServer(config)
        await server.start()
        ios_url, admin_url, token = server.url("ios"), server.url("admin"), local.admin_token(data_dir)
        topic = _topic(config)
        report.setup = {
            "server": f"local subprocess pid {server.pid}",
            "data_dir": str(data_dir),
            "database": _engine_name(options.database_url),
        }
    else:
        if not options.admin_url or not options.token:
            raise BenchError("a remote --url needs --admin-url and --token (admin API) as well")
        ios_url, admin_url, token = options.url.rstrip("/"), options.admin_url, options.token
        report.setup = {"server": f"remote {ios_url}"}
    admin = Admin(admin_url, token, roots)
    try:
        if options.url is not None:
            members, topic = await _remote_members(options, admin, roots, say, report)
        pid = server.pid if server else options.server_pid
        report.setup.update(
            {
                "devices": options.devices,
                "mode": options.mode,
                "transport": "plain HTTP"
                if options.plain or ios_url.startswith("http://")
                else "TLS (keep-alive)",
                "key_type": options.key_type,
            }
        )
        async with Fleet(
            members,
            server_url=f"{ios_url}/mdm/server",
            checkin_url=f"{ios_url}/mdm/checkin",
            topic=topic,
            mode=options.mode,
            trusted_roots=roots,
            concurrency=options.concurrency,
        ) as fleet:
            await _check_in_missing(fleet, admin, say, report)
            if pid:
                report.rss_kib["start"] = rss_kib(pid).get("VmRSS")
            if options.warmup:
                say(f"warm-up: one idle poll per device ({len(fleet.members)})...")
                warm = await fleet.warm_up()
                report.prepare["warmup_s"] = round(warm.elapsed, 1)
                report.prepare["warmup_polls_per_s"] = warm.summary()["per_second"]
                if warm.errors:
                    raise AdminError(f"warm-up polls failed: {dict(warm.errors)}")
                if pid:
                    report.rss_kib["after_warmup"] = rss_kib(pid).get("VmRSS")
            if options.emit_wrk:
                script = wrk.emit(options.emit_wrk, fleet.members)
                say(
                    f"wrote {script} (+ idle_bodies.lua): wrk -t2 -c50 -d30s -s {script} {ios_url}/mdm/server"
                )
            if not options.skip_idle:
                cpu0 = cpu_seconds(pid) if pid else None
                sampler = None
                if options.py_spy and pid:
                    sampler = await profile.record(pid, options.duration - 2, options.py_spy)
                await _idle_phase(options, fleet, say, report)
                if sampler is not None and options.py_spy:
                    _, err = await sampler.communicate()
                    if sampler.returncode != 0:
                        raise BenchError(f"py-spy failed: {err.decode().strip()[-300:]}")
                    report.profile = {"file": str(options.py_spy), **profile.summarise(options.py_spy)}
                cpu1 = cpu_seconds(pid) if pid else None
                if cpu0 is not None and cpu1 is not None and report.idle.get("requests"):
                    used = cpu1 - cpu0
                    report.idle["server_cpu_us_per_poll"] = round(used * 1e6 / report.idle["requests"], 1)
                    report.idle["server_cpu_percent"] = round(100 * used / options.duration, 1)
            if pid:
                report.rss_kib["after_idle"] = rss_kib(pid).get("VmRSS")
            if not options.skip_rt:
                cpu0 = cpu_seconds(pid) if pid else None
                sampler, rt_profile = None, None
                if options.py_spy and pid:
                    rt_profile = options.py_spy.with_name(options.py_spy.stem + "-rt" + options.py_spy.suffix)
                    rt_seconds = (options.rt_duration or options.duration) - 2
                    sampler = await profile.record(pid, rt_seconds, rt_profile)
                await _round_trip_phase(options, fleet, admin, say, report)
                cpu1 = cpu_seconds(pid) if pid else None
                if cpu0 is not None and cpu1 is not None and report.round_trip.get("requests"):
                    report.round_trip["server_cpu_ms_per_round_trip"] = round(
                        (cpu1 - cpu0) * 1000 / report.round_trip["requests"], 2
                    )
                if sampler is not None and rt_profile is not None:
                    _, err = await sampler.communicate()
                    if sampler.returncode == 0:
                        report.profile_rt = {"file": str(rt_profile), **profile.summarise(rt_profile)}
            if pid:
                final = rss_kib(pid)
                report.rss_kib["end"] = final.get("VmRSS")
                report.rss_kib["peak"] = final.get("VmHWM")
    finally:
        await admin.close()
        if server is not None:
            await server.stop()
    return report


def _topic(config: Any) -> str:
    from mdm.enroll.topic import read_topic

    return read_topic(config).topic


def render(report: Report) -> str:
    s, p, i, r, b, m = (
        report.setup,
        report.prepare,
        report.idle,
        report.round_trip,
        report.background,
        report.rss_kib,
    )
    lines = [
        f"mdm bench ios: {s.get('devices')} devices, {s.get('mode')} over {s.get('transport')}, "
        f"{s.get('database', '')} [{s.get('server')}]"
    ]
    if p:
        lines.append("prepare: " + ", ".join(f"{k}={v}" for k, v in p.items()))
    if i:
        cpu = (
            f"; server CPU {i['server_cpu_us_per_poll']} us/poll ({i['server_cpu_percent']}% of a core)"
            if "server_cpu_us_per_poll" in i
            else ""
        )
        lines.append(
            f"(a) idle polls: {i['per_second']}/s ({i['requests']} requests, {i.get('generator')}); latency "
            f"p50 {i['p50_ms']} ms, p90 {i['p90_ms']} ms, p99 {i['p99_ms']} ms;"
            f" errors {i['errors'] or 0}{cpu}"
        )
    if r:
        lines.append(
            f"(b) command round trip ({r['command']}, {r['concurrency']} concurrent): {r['requests']} "
            f"done; p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms;"
            f" errors {r['errors'] or 0}; server says completed: {r['checked_completed']}"
            + (
                f"; server CPU {r['server_cpu_ms_per_round_trip']} ms per round trip (incl. background)"
                if "server_cpu_ms_per_round_trip" in r
                else ""
            )
        )
    if r.get("steps"):
        lines.append(
            "    steps: "
            + "; ".join(f"{name} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms" for name, v in r["steps"].items())
        )
    if b:
        lines.append(
            f"    background idle polls during (b): {b['per_second']}/s, p99 {b['p99_ms']} ms, "
            f"errors {b['errors'] or 0}"
        )
    if m:
        lines.append("(c) server RSS: " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in m.items() if v))
    if report.profile:
        prof = report.profile
        lines.append(
            f"py-spy ({prof['samples']} event-loop samples, {prof['file']}): share of samples on stack"
        )
        lines.extend(f"    {share:5.1f}%  {frame}" for frame, share in prof["inclusive"])
        lines.append("  on top of stack (self):")
        lines.extend(f"    {share:5.1f}%  {frame}" for frame, share in prof["self"])
    return "\n".join(lines)
