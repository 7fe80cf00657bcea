"""``mdm bench ios`` end to end at small scale: a real server subprocess (on the test engine),
identities issued in bulk, check-ins, idle polls from the Python fleet and from wrk, command round
trips confirmed by the server, RSS read from /proc. Numbers are not asserted, correctness is."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PG_URL

from mdm.bench import ios, local, wrk
from mdm.push.config import apns_config
from mdm.sim.stats import Samples, percentile

pytestmark = pytest.mark.slow


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (
        percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    )
    assert percentile([3.0], 99) == 3.0
    s = Samples()
    s.add(0.010)
    s.error("http_400")
    s.elapsed = 2.0
    assert s.summary()["per_second"] == 0.5 and s.summary()["errors"] == {"http_400": 1}


def test_lua_long_strings_never_end_early() -> None:
    assert wrk._lua_long_string(b"<a>]=]</a>") == "[==[<a>]=]</a>]==]"


async def test_bench_python_fleet_and_wrk(tmp_path: Path, database_url: str) -> None:
    lines: list[str] = []
    options = ios.Options(
        devices=12,
        duration=2.0,
        data_dir=tmp_path / "bench",
        database_url=database_url,
        concurrency=4,
        rt_concurrency=2,
        rt_command="DeviceInformation",  # RefreshDeviceInfo of device_info, answered in full
        background_rate=20,
        emit_wrk=tmp_path / "wrk",
        generator="wrk" if shutil.which("wrk") else "python",
    )
    report = await ios.run(options, lines.append)
    assert report.prepare["identities_issued"] == 12 and report.prepare["checkins"] == 12
    idle = report.idle
    assert idle["requests"] > 0 and not idle["errors"], idle
    rt = report.round_trip
    assert rt["requests"] > 0 and not rt["errors"], rt
    done, checked = rt["checked_completed"].split("/")
    assert done == checked and int(checked) > 0
    assert report.background["requests"] > 0 and not report.background["errors"]
    # The device side alone, in rounds: one command per round-trip device (half the fleet) queued
    # per round, rounds until 2 s (--duration) of delivery were timed.
    delivery = report.delivery
    assert delivery["round_size"] == 6 and delivery["rounds"] >= 2, delivery
    assert delivery["requests"] == 6 * delivery["rounds"] and not delivery["errors"], delivery
    assert delivery["timed_s"] >= 2.0
    spread = delivery["server_cpu_ms_per_round_trip_rounds"]
    assert 0 <= spread["min"] <= spread["median"] <= spread["max"]
    assert spread["min"] <= delivery["server_cpu_ms_per_round_trip"] <= spread["max"]
    assert report.rss_kib["start"] > 10_000 and report.rss_kib["peak"] >= report.rss_kib["end"]
    text = ios.render(report)
    assert "(a) idle polls" in text and "(b) command round trip" in text and "(c) server RSS" in text
    assert "(b2) delivery only (DeviceInformation queued first" in text
    assert f"in {delivery['rounds']} rounds of 6" in text and "(rounds: min " in text
    # The emitted wrk files replay signed polls of the same devices.
    bodies = (tmp_path / "wrk" / "idle_bodies.lua").read_text()
    assert bodies.count("<key>Status</key>") == 12 and (tmp_path / "wrk" / "idle.lua").exists()

    # Second run on the same data dir: identities and enrollments are reused, nothing re-issued.
    again = await ios.run(
        ios.Options(
            devices=12,
            duration=1.0,
            data_dir=tmp_path / "bench",
            database_url=database_url,
            concurrency=4,
            mode="mtls",
            skip_rt=True,
        ),
        lines.append,
    )
    assert again.prepare["identities_cached"] == 12 and again.prepare["already_checked_in"] == 12
    assert "identities_issued" not in again.prepare
    assert again.idle["requests"] > 0 and not again.idle["errors"], again.idle


async def test_bench_with_the_apns_fake_pushes_every_enqueue(tmp_path: Path) -> None:
    """``--apns-fake``: APNs configured against the contract fake, so each command queued in (b)
    and (b2) owes a wake-up that the server's push dispatcher sends (the devices poll at once
    anyway): the fake accepted a push per enqueue, none failed."""
    if PG_URL:
        pytest.skip("engine-independent orchestration: SQLite only")
    lines: list[str] = []
    report = await ios.run(
        ios.Options(devices=6, duration=1.5, data_dir=tmp_path / "bench", concurrency=2, rt_concurrency=2,
                    background_rate=5, skip_idle=True, apns_fake=True),
        lines.append,
    )
    assert report.setup["apns"].startswith("contract fake (pid ")
    rt, delivery = report.round_trip, report.delivery
    assert rt["requests"] > 0 and not rt["errors"] and not delivery["errors"], (rt, delivery)
    queued = rt["requests"] + delivery["requests"]
    # Each queued command owed a push; a push to a device already owed one may be folded into it.
    assert 0 < report.setup["apns_pushes_accepted"] <= queued, (report.setup, queued)
    with pytest.raises(ios.BenchError, match="--apns-fake"):
        await ios.run(ios.Options(devices=1, duration=1, url="https://example.invalid", admin_url="x",
                                  token="t", apns_fake=True), lines.append)
    # The same data directory without --apns-fake: the server runs without APNs (not against the
    # previous run's fake, gone with it: every wake-up would fail and be retried in the server's
    # loop), and the report says so from the server's own push status.
    again = await ios.run(
        ios.Options(devices=6, duration=1.5, data_dir=tmp_path / "bench", concurrency=2, rt_concurrency=2,
                    background_rate=5, skip_idle=True, rt_delivery=0),
        lines.append,
    )
    assert again.setup["apns"] == "not configured", again.setup
    apns = apns_config(local.load(tmp_path / "bench"))  # back to the topic-only stand-in
    assert apns.certificate_file == str(tmp_path / "bench" / local.PUSH_STAND_IN), apns
    assert not apns.key_file and not apns.base_url and not apns.ca_file, apns
    assert again.round_trip["requests"] > 0 and not again.round_trip["errors"], again.round_trip


def test_bench_cli_rejects_bad_combinations(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mdm",
            "bench",
            "ios",
            "--devices",
            "5",
            "--mode",
            "mtls",
            "--plain",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "--plain" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "mdm", "bench", "ios", "--url", "https://example.invalid"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "--admin-url" in proc.stderr


def test_profile_summary_keeps_loop_and_greenlets_not_threads(tmp_path: Path) -> None:
    from mdm.bench.profile import summarise

    raw = tmp_path / "p.raw"
    raw.write_text(
        "<module> (mdm/__main__.py:3);run (asyncio/runners.py:190);Runner.run (asyncio/runners.py:118) 60\n"
        "Runner.run (asyncio/runners.py:118);server_handler (mdm/ios/handlers.py:90);"
        "_verify_signature (mdm/ios/identity.py:265) 30\n"
        "greenlet_spawn (sqlalchemy/util/concurrency.py:209);"
        "Session.execute (sqlalchemy/orm/session.py:2555) 10\n"
        "Thread._bootstrap (threading.py:1002);_connection_worker_thread (aiosqlite/core.py:59) 500\n"
    )
    summary = summarise(raw)
    assert summary["samples"] == 100
    inclusive = dict(summary["inclusive"])
    own = dict(summary["self"])
    assert inclusive["server_handler (ios/handlers.py)"] == 30.0
    assert own["Runner.run (asyncio/runners.py)"] == 60.0
    assert own["Session.execute (orm/session.py)"] == 10.0
    assert not any("aiosqlite" in f for f in inclusive)


class TestRemoteServer:
    """``--url``: a running server measured through its public endpoints only (devices enrolled
    through the enrollment API, one one-time profile each)."""

    @pytest.fixture
    def extra_config(self) -> str:
        from enroll_support import APNS_TOML

        return APNS_TOML

    async def test_bench_against_a_running_server(self, server, config, admin_token: str) -> None:
        import os

        from conftest import listener_url

        lines: list[str] = []
        report = await ios.run(
            ios.Options(
                devices=3,
                duration=1.0,
                url=listener_url(server, "ios"),
                admin_url=listener_url(server, "admin"),
                token=admin_token,
                ca=config.ca_dir / "root.pem",
                server_pid=os.getpid(),
                concurrency=2,
                rt_concurrency=1,
                background_rate=5,
            ),
            lines.append,
        )
        assert report.prepare["checkins"] == 3 and report.prepare["enroll_s"] >= 0
        assert report.idle["requests"] > 0 and not report.idle["errors"], report.idle
        assert report.round_trip["requests"] > 0 and not report.round_trip["errors"], report.round_trip
        assert report.rss_kib["start"] > 0
