"""``mdm bench ios``: simulated iOS devices as load generators.

Phases:
  prepare  identities for N devices (local: issued in bulk through the service layer and cached;
           remote: one enrollment link per device through the admin API), then Authenticate +
           TokenUpdate for those the server does not know yet;
  (a) idle steady idle polls with a real Mdm-Signature on every request (or mutual TLS), from the
           Python fleet or from wrk replaying precomputed signed bodies;
  (b) rt   command round trip: enqueue through the admin API -> the device polls at once (standing
           in for the APNs wake-up) -> Acknowledged accepted; under a background idle load;
  (b2)     the device side alone, in rounds (``mdm.bench.delivery``): queue the command for
           --rt-delivery devices through the API (untimed), then poll, deliver and answer them
           with the server's CPU counted; repeated with the same devices until
           --rt-delivery-duration seconds (default --rt-duration, else --duration; use >= 10 s to
           resolve 10-20 %) of delivery were timed. Reported: round trips, rounds, server CPU per
           round trip over all rounds and its spread per round (min / median / max);
  (c) rss  the server's VmRSS before and after, and its peak (VmHWM).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy.engine import make_url

from mdm.bench import collector, delivery, fleet_apns, local, phases, profile, wrk
from mdm.bench.model import AdminError, BenchError, Options, Report, Say
from mdm.bench.stats import cpu_seconds, rss_kib
from mdm.sim.fleet import Fleet

__all__ = ["AdminError", "BenchError", "Options", "Report", "render", "run"]


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
    if options.apns_fake and options.url is not None:
        raise BenchError("--apns-fake configures a local server: not with --url")
    report = Report()
    server: local.LocalServer | None = None
    temp_dir: Path | None = None
    fake: fleet_apns.FakeProcess | None = None
    stack = contextlib.AsyncExitStack()
    try:
        roots: list[x509.Certificate] = []
        if options.ca:
            roots = x509.load_pem_x509_certificates(options.ca.read_bytes())
        if options.url is None:
            if options.data_dir is None:
                temp_dir = Path(tempfile.mkdtemp(prefix="mdm-bench-"))
            data_dir = options.data_dir or temp_dir
            assert data_dir is not None
            say(f"preparing {data_dir} ({_engine_name(options.database_url)})...")
            t0 = time.perf_counter()
            prepared = asyncio.ensure_future(asyncio.to_thread(
                local.prepare,
                data_dir,
                database_url=options.database_url,
                plain=options.plain,
                pool_size=options.pool_size,
            ))
            try:
                config = await asyncio.shield(prepared)
            except asyncio.CancelledError:
                # `mdm init` runs in a thread: let it finish writing before the directory goes.
                with contextlib.suppress(Exception):
                    await prepared
                raise
            say(f"prepared in {time.perf_counter() - t0:.1f}s")
            if options.apns_fake:
                fake = await stack.enter_async_context(
                    fleet_apns.running(data_dir, avoid=local.listener_ports(config))
                )
                fleet_apns.configure(data_dir, fake.info)
                config = local.load(data_dir)
            elif fleet_apns.unconfigure(data_dir, data_dir / local.PUSH_STAND_IN):
                config = local.load(data_dir)
            roots = roots or x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())
            members = await phases.local_members(options, config, say, report)
            server = local.LocalServer(config)
            say("starting mdm serve...")
            t0 = time.perf_counter()
            await server.start()
            say(f"mdm serve (pid {server.pid}) answers after {time.perf_counter() - t0:.1f}s")
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
        admin = phases.Admin(admin_url, token, roots)
        try:
            if server is not None:  # what the server runs with, not what the bench meant it to
                pushing = await admin.push_configured("apns")
                report.setup["apns"] = (f"contract fake (pid {fake.pid})" if fake is not None and pushing
                                        else "configured" if pushing else "not configured")
            if options.url is not None:
                members, topic = await phases.remote_members(options, admin, roots, say, report)
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
                await phases.check_in_missing(fleet, admin, say, report, options.progress_interval)
                if pid:
                    report.rss_kib["start"] = rss_kib(pid).get("VmRSS")
                if options.warmup:
                    say(f"warm-up: one idle poll per device ({len(fleet.members)})...")
                    warm = await phases.warm_up(fleet, say, options.progress_interval)
                    report.prepare["warmup_s"] = round(warm.elapsed, 1)
                    report.prepare["warmup_polls_per_s"] = warm.summary()["per_second"]
                    if warm.errors:
                        raise AdminError(f"warm-up polls failed: {dict(warm.errors)}")
                    if pid:
                        report.rss_kib["after_warmup"] = rss_kib(pid).get("VmRSS")
                if options.emit_wrk:
                    script = wrk.emit(options.emit_wrk, fleet.members)
                    say(
                        f"wrote {script} (+ idle_bodies.lua): "
                        f"wrk -t2 -c50 -d30s -s {script} {ios_url}/mdm/server"
                    )
                stack.enter_context(collector.settled())  # the measured phases (until the run ends)
                if not options.skip_idle:
                    cpu0 = cpu_seconds(pid) if pid else None
                    sampler = None
                    if options.py_spy and pid:
                        sampler = await profile.record(pid, options.duration - 2, options.py_spy)
                    await phases.idle_phase(options, fleet, say, report)
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
                        spy = options.py_spy
                        rt_profile = spy.with_name(spy.stem + "-rt" + spy.suffix)
                        rt_seconds = (options.rt_duration or options.duration) - 2
                        sampler = await profile.record(pid, rt_seconds, rt_profile)
                    await phases.round_trip_phase(options, fleet, admin, say, report)
                    cpu1 = cpu_seconds(pid) if pid else None
                    if cpu0 is not None and cpu1 is not None and report.round_trip.get("requests"):
                        report.round_trip["server_cpu_ms_per_round_trip"] = round(
                            (cpu1 - cpu0) * 1000 / report.round_trip["requests"], 2
                        )
                    if options.rt_delivery > 0:
                        await delivery.delivery_phase(
                            options, fleet, admin, say, report, lambda: cpu_seconds(pid) if pid else None
                        )
                    if sampler is not None and rt_profile is not None:
                        _, err = await sampler.communicate()
                        if sampler.returncode == 0:
                            report.profile_rt = {"file": str(rt_profile), **profile.summarise(rt_profile)}
                if pid:
                    final = rss_kib(pid)
                    report.rss_kib["end"] = final.get("VmRSS")
                    report.rss_kib["peak"] = final.get("VmHWM")
                if fake is not None:
                    report.setup["apns_pushes_accepted"] = int((await fake.stats())["accepted"])
        finally:
            await admin.close()
    finally:
        # Also on errors and Ctrl-C (the task is cancelled and unwinds through here).
        if server is not None:
            await server.stop()
        await stack.aclose()  # the APNs fake, after the server
        if temp_dir is not None:
            _dispose(temp_dir, options.keep_data, say, report)
    return report


def _dispose(directory: Path, keep: bool, say: Say, report: Report) -> None:
    """The temporary data directory holds the CA's private keys and an admin token: removed
    unless the caller asked to keep it."""
    if keep:
        say(f"kept the data directory {directory} (CA keys and an admin token inside: remove it when done)")
        return
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        say(f"warning: could not remove all of {directory}; it holds CA keys: remove it by hand")
    elif report.setup.get("data_dir") == str(directory):
        report.setup["data_dir"] = f"{directory} (removed)"


def _topic(config: Any) -> str:
    from mdm.push.topic import read_topic

    return read_topic(config).topic


def render(report: Report) -> str:
    setup, p, i, r, b, m = (
        report.setup,
        report.prepare,
        report.idle,
        report.round_trip,
        report.background,
        report.rss_kib,
    )
    lines = [
        f"mdm bench ios: {setup.get('devices')} devices, {setup.get('mode')} over {setup.get('transport')}, "
        f"{setup.get('database', '')} [{setup.get('server')}]"
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
    d = report.delivery
    if d:
        lines.append(
            f"(b2) delivery only ({d['command']} queued first, {d['concurrency']} concurrent):"
            f" {d['requests']} polled and answered in {d['rounds']} rounds of {d['round_size']}"
            f" ({d['timed_s']} s timed); p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms,"
            f" max {d['max_ms']} ms;"
            f" errors {d['errors'] or 0}"
            + (
                f"; server CPU {d['server_cpu_ms_per_round_trip']} ms per round trip (poll + answer)"
                if "server_cpu_ms_per_round_trip" in d
                else ""
            )
            + (
                " (rounds: min {min} / median {median} / max {max} ms)".format(
                    **d["server_cpu_ms_per_round_trip_rounds"]
                )
                if "server_cpu_ms_per_round_trip_rounds" in d
                else ""
            )
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
