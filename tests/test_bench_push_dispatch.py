"""``python -m mdm.bench.push_dispatch``: every prepared device is woken through the real worker
and accepted by the APNs contract fake; with commands queued, every row stays owed as a re-push
(the devices are silent), without them none does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engines import ENGINE_FREE


@ENGINE_FREE  # its own SQLite data directory
@pytest.mark.parametrize(("commands", "owed"), [(False, 0), (True, 120)], ids=["idle", "with-commands"])
def test_every_wake_up_is_accepted_and_the_report_says_so(tmp_path: Path, commands: bool, owed: int) -> None:
    args = [sys.executable, "-m", "mdm.bench.push_dispatch", "--devices", "120", "--json",
            "--data-dir", str(tmp_path / "data"), *(["--commands"] if commands else [])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert (report["engine"], report["devices"], report["commands"]) == ("sqlite", 120, commands)
    assert report["woken"] == 120
    assert report["owed_after"] == owed
    assert report["drain_cpu_us"] > 0 and report["request_cpu_us"] > 0
