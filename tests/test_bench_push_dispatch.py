"""``python -m mdm.bench.push_dispatch``: every prepared device is woken through the real worker
and accepted by the APNs contract fake; with commands queued, every row stays owed as a re-push
(the devices are silent), without them none does."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
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


@ENGINE_FREE  # its own SQLite data directory
def test_mdm_bench_push_dispatch_runs_the_bench_with_a_breakdown(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "mdm", "bench", "push-dispatch", "--devices", "60", "--batch-size", "25",
            "--breakdown", "--json", "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert (report["devices"], report["woken"], report["batch_size"]) == (60, 60, 25)
    assert report["breakdown_us"]["_deliver"] > 0  # the sends, measured apart


@ENGINE_FREE
def test_mdm_bench_push_dispatch_refuses_nonsense_sizes() -> None:
    proc = subprocess.run([sys.executable, "-m", "mdm", "bench", "push-dispatch", "--devices", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--devices" in proc.stderr


def test_the_cli_takes_the_same_options_as_the_module() -> None:
    from mdm.bench import push_dispatch
    from mdm.cli import bench_push_dispatch

    def options(add: Callable[[argparse.ArgumentParser], None]) -> list[tuple[object, ...]]:
        parser = argparse.ArgumentParser()
        add(parser)
        return [(a.option_strings, a.default, a.type, a.help) for a in parser._actions]

    assert options(bench_push_dispatch._add_arguments) == options(push_dispatch.add_arguments)
