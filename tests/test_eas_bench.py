"""``mdm bench eas`` at a small size: both runs complete, every device is discovered, the report
has its figures; a runner the bench does not have is refused with exit status 2."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from mdm.bench import eas
from tests.engines import ENGINE_FREE

pytestmark = ENGINE_FREE


async def test_bench_small() -> None:
    lines: list[str] = []
    report = await eas.run(eas.Options(mailboxes=60, devices=120, batch=7, concurrency=3), lines.append)
    assert [r["outcome"] for r in report.runs] == ["ok", "ok"]
    assert all(r["devices"] == 120 and r["mailboxes"] == 60 for r in report.runs)
    assert report.runs[0]["devices_per_second"] > 0 and report.rss_mib_peak >= report.rss_mib_before > 0
    assert "devices/s" in eas.render(report)


async def test_bench_cli_json_local_psrp_and_bad_runner() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mdm",
        "bench",
        "eas",
        "--mailboxes",
        "20",
        "--devices",
        "30",
        "--once",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert len(doc["runs"]) == 1 and doc["runs"][0]["devices"] == 30
    # Through the wire: the PSRP fake in its own process, a real KDC, the production runner.
    args = ["--mailboxes", "20", "--devices", "30", "--once", "--json", "--runner", "psrp"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", "bench", "eas", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert doc["options"]["runner"] == "psrp"
    assert doc["runs"][0]["outcome"] == "ok" and doc["runs"][0]["devices"] == 30
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", "bench", "eas", "--runner", "nope",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 2 and "nope" in err.decode()
