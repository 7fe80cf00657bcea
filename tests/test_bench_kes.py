"""``mdm bench kes`` end to end at a small N: the real command prepares 50 enrolled KES devices in a
data directory, starts ``mdm serve``, drives steady syncs over mutual TLS with kept-alive
connections and then with a handshake per sync, and reports numbers that agree with each other
and with the server (every sync answered 200, one handshake per sync in the second phase, none
in the first, server CPU and RSS read). A second run on the same data directory reuses the
devices, and the devices' syncs reached the database (``kes_devices.last_sync_at``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mdm.config_sections import load as load_config
from mdm.db.engine import Database
from mdm.kes.tables import KesDevice

pytestmark = pytest.mark.slow

DEVICES, RATE, DURATION = 50, 40.0, 2.0


def run_bench(data_dir: Path, database_url: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    engine = ["--database-url", database_url] if database_url.startswith("postgresql") else []
    proc = subprocess.run(
        [sys.executable, "-m", "mdm", "bench", "kes", "--devices", str(DEVICES), "--rate", str(RATE),
         "--handshake-rate", str(RATE), "--duration", str(DURATION), "--workers", "2",
         "--data-dir", str(data_dir), *engine, "--json"],
        capture_output=True, text=True, env=env, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(b) reuse" in proc.stderr and "(c) handshake" in proc.stderr  # progress on stderr only
    return dict(json.loads(proc.stdout))


def check_phase(phase: dict[str, Any], *, handshake: bool) -> None:
    expected = RATE * DURATION
    assert phase["errors"] == {} and phase["setup_errors"] == {} and phase["workers_ready"] == 2
    # An open loop at RATE for DURATION: every slot is one sync (a slot or so lost per device at
    # the window's edges, none gained).
    assert 0.9 * expected <= phase["syncs"] <= expected
    assert phase["per_second"] == round(phase["syncs"] / DURATION, 1)
    assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"] < 5000
    assert phase["handshakes"] == (phase["syncs"] if handshake else 0)
    assert phase["server_cpu_s"] > 0 and phase["server_cpu_ms_per_sync"] > 0
    assert phase["generator_cpu_ms_per_sync"] > 0
    assert phase["server_rss_peak_mib"] > 20


async def synced_devices(data_dir: Path) -> int:
    config = load_config(data_dir, env={}, require_file=True)
    db = Database(config.database_url, 1)
    try:
        async with db.session() as session:
            stmt = select(func.count()).select_from(KesDevice).where(KesDevice.last_sync_at.is_not(None))
            return int(await session.scalar(stmt) or 0)
    finally:
        await db.close()


def test_bench_kes_small(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "bench"
    report = run_bench(data_dir, database_url)
    setup = report["setup"]
    assert setup["devices"] == setup["connections"] == DEVICES and setup["offered_rate"] == RATE
    assert report["reuse"]["offered_rate"] == report["handshake"]["offered_rate"] == RATE
    assert report["prepare"]["devices"] == report["prepare"]["added"] == DEVICES
    check_phase(report["reuse"], handshake=False)
    check_phase(report["handshake"], handshake=True)
    rss = report["rss_mib"]
    assert 0 < rss["start"]["VmRSS"] and rss["after_handshake"]["VmHWM"] >= rss["start"]["VmRSS"]
    # Each driven device's first (untimed) sync reported its inventory: it reached the database.
    assert asyncio.run(synced_devices(data_dir)) == DEVICES

    again = run_bench(data_dir, database_url)
    assert again["prepare"]["added"] == 0 and again["prepare"]["devices"] == DEVICES
    check_phase(again["reuse"], handshake=False)
