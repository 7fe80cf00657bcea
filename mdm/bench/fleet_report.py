"""The report of ``mdm bench fleet``: what each phase measured, a failed phase's reason kept
beside the others' figures (``guarded``), the pushes the server made meanwhile
(``pushes_meanwhile``), and the text form (``render``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mdm.bench.progress import Say


@dataclass
class Report:
    setup: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    bulk: dict[str, Any] = field(default_factory=dict)
    wakeups: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    pages: dict[str, Any] = field(default_factory=dict)
    storm: dict[str, Any] = field(default_factory=dict)
    cold_polls: dict[str, Any] = field(default_factory=dict)
    recall: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # phase -> what stopped it

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


@contextlib.asynccontextmanager
async def guarded(report: Report, phase: str, say: Say) -> AsyncIterator[None]:
    """Run one phase; if it fails, record why in ``report.errors`` and go on (what the other
    phases measured is never lost to one that failed)."""
    try:
        yield
    except Exception as exc:  # any failure of a phase is reported, not raised
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        report.errors[phase] = reason[:500]
        say(f"{phase} failed: {reason[:300]} (the run goes on)")


class Accepted(Protocol):
    async def stats(self) -> dict[str, Any]: ...


@contextlib.asynccontextmanager
async def pushes_meanwhile(fake: Accepted) -> AsyncIterator[dict[str, Any]]:
    """Count the pushes the APNs fake accepted while a phase ran (the dict yielded holds
    ``pushes_meanwhile`` and ``pushes_per_s`` once the block ended):
    at 10^6 the server re-pushes the silent devices of the bulk command (``push.retry_seconds``
    after their first wake-up, doubling) through the later phases, and that work shares the
    server with what the phase measures."""
    before: int | None = None
    with contextlib.suppress(Exception):  # a phase's figures never depend on the fake answering
        before = int((await fake.stats())["accepted"])
    t0 = time.perf_counter()
    into: dict[str, Any] = {}
    try:
        yield into
    finally:
        with contextlib.suppress(Exception):
            if before is None:
                raise LookupError("no count before the phase")
            pushes = int((await fake.stats())["accepted"]) - before
            into["pushes_meanwhile"] = pushes
            into["pushes_per_s"] = round(pushes / max(1e-9, time.perf_counter() - t0), 1)


def render(report: Report) -> str:
    setup, p, b, w, a = report.setup, report.prepare, report.bulk, report.wakeups, report.answers
    lines = [f"mdm bench fleet: {setup.get('devices'):,} devices ({setup.get('answering'):,} answering), "
             f"{setup.get('database')}, {setup.get('transport')}, {setup.get('data_dir')}"]
    if setup.get("postgresql"):
        lines.append("    PostgreSQL: " + ", ".join(f"{k} {v}" for k, v in setup["postgresql"].items()))
    if p:
        lines.append(f"(a) prepare: {p['added']:,} added in {p['seconds']}s"
                     + (f" ({p['per_second']:,}/s)" if p.get("per_second") else " (reused)")
                     + f", {p['key_type']} device keys"
                     + (f", VACUUM (ANALYZE) {p['vacuum_s']}s" if "vacuum_s" in p else "")
                     + (", CHECKPOINT" if p.get("checkpoint") else ""))
    if b:
        rss = b.get("rss", {})
        lines.append(f"(b) bulk {setup.get('command')} [{b['api']}]: all queued in {b['queued_s']}s "
                     f"({b['queued_per_s']}/s), server CPU {b['server_cpu_us_per_device']} µs/device; "
                     f"RSS {rss.get('start_mib')} -> peak {rss.get('peak_mib')} -> {rss.get('end_mib')} MiB")
        status = b.get("status", {})
        counts = {k: status[k] for k in ("state", "targeted", "queued", "skipped", "woken", "delivered",
                                         "completed", "failed") if k in status}
        lines.append(f"    bulk status: {counts}")
    if w:
        lines.append(f"(c) wake-ups: all accepted by the APNs fake {w['accepted_s']}s after the request "
                     f"({w['per_s']}/s)")
    if a:
        lines.append(f"(d) answers: {a['completed']:,}/{a['answering']:,} completed; "
                     f"50% at {a['p50_done_s']}s, 99% at {a['p99_done_s']}s, 100% at {a['all_done_s']}s; "
                     f"{a['round_trips_per_s']} round "
                     f"trips/s, server CPU {a['server_cpu_ms_per_round_trip']} ms each"
                     + (" (overlapping queuing/pushing)" if a.get("overlaps_queuing_or_pushing") else "")
                     + f"; woken->answered p99 {a['p99_ms']} ms, max {a['max_ms']} ms; errors {a['errors']}")
    if report.idle:
        lines.append(_polls("(e) idle polls", report.idle, with_max=True))
    if report.pages:
        lines.append("(f) GET /devices: " + "; ".join(
            f"{name} {v['p50_ms']}/{v['max_ms']} ms ({v['items']})" for name, v in report.pages.items())
            + "  [p50/max, items]")
    if report.storm:
        g = report.storm
        lines.append(f"(g) check-in storm: {g['messages_per_s']:,} messages/s ({g['devices']:,} devices in "
                     f"{g['seconds']}s), server CPU {g['server_cpu_ms_per_message']} ms/message; "
                     f"errors {g['errors']}" + _pushes(g))
    if report.cold_polls:
        c = report.cold_polls
        lines.append(_polls(f"    {c['requests']:,} cold first polls after a restart", c, with_max=False)
                     + (f"; backends' CPU {c['backend_cpu_us_per_poll']} µs/poll"
                        if "backend_cpu_us_per_poll" in c else ""))
    if report.recall:
        lines.append(f"    recall at the end: {report.recall}")
    for phase, reason in report.errors.items():
        lines.append(f"    {phase} failed: {reason}")
    lines.append("server RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in report.rss_mib.items()))
    return "\n".join(lines)


def _polls(title: str, p: dict[str, Any], *, with_max: bool) -> str:
    """A polling phase's line: rate, p99 (and max), the server's CPU per poll, errors."""
    return (f"{title}: {p['per_second']:,}/s, p99 {p['p99_ms']} ms"
            + (f", max {p['max_ms']} ms" if with_max else "")
            + f", server CPU {p.get('server_cpu_us_per_poll')} µs/poll; errors {p['errors']}" + _pushes(p))


def _pushes(phase: dict[str, Any]) -> str:
    """The server's pushes meanwhile (its re-pushes of silent devices share the CPU)."""
    rate = phase.get("pushes_per_s")
    return f"; meanwhile the server pushed {rate:,}/s" if rate else ""
