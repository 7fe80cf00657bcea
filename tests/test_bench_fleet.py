"""``mdm bench fleet`` end to end on a small fleet: the real command prepares 300 devices, queues a
bulk ``Block`` to all of them, the APNs fake accepts a wake-up for each, 50 simulated devices
answer when woken, then idle polls, device pages, a check-in storm and cold polls after a
restart. The report's numbers must agree with each other and with the server; a second run on
the same data directory reuses the fleet and starts from the same state (the first run recalled
what the silent devices did not fetch)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mdm.config_sections import load as load_config
from mdm.db.engine import Database
from mdm.db.models import Command, Device, utcnow

pytestmark = pytest.mark.slow

DEVICES, ANSWERING, COLD = 300, 50, 80


def run_fleet(data_dir: Path, database_url: str, *extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    engine = ["--database-url", database_url] if database_url.startswith("postgresql") else []
    proc = subprocess.run(
        [sys.executable, "-m", "mdm", "bench", "fleet", "--devices", str(DEVICES), "--answering",
         str(ANSWERING), "--data-dir", str(data_dir), "--key-type", "ec", "--concurrency", "10",
         "--idle-seconds", "2", "--timeout", "120", *engine, *extra, "--json"],
        capture_output=True, text=True, env=env, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(d) answers" in proc.stderr  # progress goes to stderr, never into the JSON
    return dict(json.loads(proc.stdout))


def check_run(report: dict[str, Any], cold: int = ANSWERING) -> None:
    bulk, status = report["bulk"], report["bulk"]["status"]
    assert bulk["queued_s"] is not None and bulk["queued_s"] > 0
    assert status["targeted"] == status["queued"] == DEVICES and status["skipped"] == 0
    assert report["wakeups"]["accepted_s"] is not None
    answers = report["answers"]
    assert answers["completed"] == answers["answering"] == ANSWERING and answers["errors"] == {}
    assert answers["p50_done_s"] <= answers["p99_done_s"] <= answers["all_done_s"]
    assert answers["round_trips_per_s"] > 0 and answers["server_cpu_ms_per_round_trip"] > 0
    idle = report["idle"]
    assert idle["requests"] > 0 and idle["errors"] == {}  # answered devices have empty queues
    pages = report["pages"]
    assert pages["first_page"]["items"] == 100 and pages["group"]["items"] == DEVICES // 10
    assert pages["protocol_ios"]["items"] == 100 and pages["status_ok"]["items"] == 100
    assert pages["deep_page"]["items"] == DEVICES - int(DEVICES * 0.9) - 1  # after the cursor's id
    assert report["storm"]["devices"] == ANSWERING and report["storm"]["errors"] == {}
    # More cold polls than answering devices: the next devices, whose Block the recall removed.
    assert report["cold_polls"]["requests"] == cold and report["cold_polls"]["errors"] == {}
    assert report["cold_polls"]["server_cpu_us_per_poll"] > 0
    on_pg = report["setup"]["database"] == "PostgreSQL"
    assert ("backend_cpu_us_per_poll" in report["cold_polls"]) == on_pg
    # PostgreSQL's settings the figures depend on are in the report's setup.
    pg = report["setup"].get("postgresql", {})
    assert set(pg) == ({"shared_buffers", "max_wal_size", "autovacuum"} if on_pg else set())
    assert report["recall"]["recalled"] == DEVICES - ANSWERING
    assert report["recall"]["completed"] == ANSWERING
    rss = report["rss_mib"]
    assert 0 < rss["start"] <= rss["peak"]


def test_a_small_fleet_end_to_end_twice_on_the_same_data(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "fleet"
    first = run_fleet(data_dir, database_url, "--cold-polls", str(COLD))
    assert first["prepare"]["added"] == DEVICES
    check_run(first, COLD)
    # Without the storm the cold polls still run (their own --skip cold)...
    second = run_fleet(data_dir, database_url, "--skip", "storm")
    assert second["prepare"]["added"] == 0
    check_run({**second, "storm": first["storm"]})
    assert "storm" not in second
    # ... and without them the server is not restarted.
    third = run_fleet(data_dir, database_url, "--skip", "storm", "--skip", "cold")
    check_run({**third, "storm": first["storm"], "cold_polls": first["cold_polls"]}, COLD)
    assert "storm" not in third and "cold_polls" not in third


def test_a_smaller_fleet_on_a_prepared_directory_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "fleet"
    (data_dir / "bench").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "mdm", "bench", "fleet", "--devices", "0", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "--devices" in proc.stderr


async def _leave_delivered_blocks(data_dir: Path, count: int) -> None:
    """What an interrupted run leaves: the last ``count`` devices (none of them answering) hold a
    delivered, never answered Block."""
    config = load_config(data_dir, env={}, require_file=True)
    db = Database(config.database_url, 1)
    try:
        async with db.transaction() as session:
            ids = (await session.scalars(select(Device.id).order_by(Device.id.desc()).limit(count))).all()
            for device_id in ids:
                session.add(Command(guid=str(uuid.uuid4()).upper(), device_id=device_id, type="Block",
                                    args={}, payload={}, status="processing", delivered_at=utcnow(),
                                    created_by="interrupted"))
    finally:
        await db.close()


def test_a_run_after_an_interrupted_one_waits_only_for_what_it_queued(
    tmp_path: Path, database_url: str
) -> None:
    """Devices still holding an earlier run's Block are skipped by the bulk and never woken for
    it: the bench waits for the wake-ups of what was queued, not for all N until --timeout."""
    data_dir = tmp_path / "fleet"
    run_fleet(data_dir, database_url, "--skip", "idle", "--skip", "pages", "--skip", "storm")
    asyncio.run(_leave_delivered_blocks(data_dir, 20))
    report = run_fleet(data_dir, database_url, "--skip", "idle", "--skip", "pages", "--skip", "storm")
    status = report["bulk"]["status"]
    assert (status["queued"], status["skipped"]) == (DEVICES - 20, 20)
    assert report["wakeups"]["accepted_s"] is not None  # not stopped at --timeout
    answers = report["answers"]
    assert answers["completed"] == ANSWERING and answers["errors"] == {}
