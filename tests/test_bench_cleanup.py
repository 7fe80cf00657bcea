"""``mdm bench ios`` leaves no secrets behind: its temporary data directory (CA keys, an admin
token) is removed at the end, on errors, on Ctrl-C and on SIGTERM, unless ``--keep-data``; a
``--data-dir`` is never removed. Long phases print progress (counts, rate, ETA) on stderr, a
few lines per second at most, never into the ``--json`` report. Tiny runs of the real command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = ["--devices", "3", "--duration", "2", "--concurrency", "2", "--rt-concurrency", "1",
        "--background-rate", "5", "--key-type", "ec"]


def bench_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    env["TMPDIR"] = str(tmpdir)  # where mkdtemp puts the data directory: the test can look
    return env


def engine(database_url: str) -> list[str]:
    # The test engine: PostgreSQL when the suite runs on it; SQLite otherwise (the bench's own file).
    return ["--database-url", database_url] if database_url.startswith("postgresql") else []


def run_bench(tmpdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tmpdir.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "mdm", "bench", "ios", *args], capture_output=True,
                          text=True, env=bench_env(tmpdir), timeout=300)


def test_temp_dir_removed_progress_on_stderr_json_clean(tmp_path: Path, database_url: str) -> None:
    tmpdir = tmp_path / "tmp"
    proc = run_bench(tmpdir, *TINY, *engine(database_url), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # the progress lines are not in it
    data_dir = report["setup"]["data_dir"]
    assert data_dir.endswith(" (removed)") and data_dir.startswith(str(tmpdir))
    assert list(tmpdir.iterdir()) == []  # CA keys, admin token, identities: gone
    err = proc.stderr
    for pattern in (
        r"^issuing identities 3/3 \(100%\) [\d,]+/s in [\d.]+s$",
        r"^checking in 3/3 \(100%\) [\d,]+/s in [\d.]+s$",
        r"^warm-up polls 3/3 \(100%\) [\d,]+/s in [\d.]+s$",
        r"^\(a\) idle 1s/2s \(50%\) [\d,]+ requests [\d,]+/s ETA 1s$",
        r"^\(b\) round trips 1s/2s \(50%\) [\d,]+ requests [\d,]+/s ETA 1s$",
    ):
        assert re.search(pattern, err, re.MULTILINE), (pattern, err)
    # at most one line per second and phase (2 s phases: two lines each)
    assert len(re.findall(r"^\(a\) idle ", err, re.MULTILINE)) <= 3


def test_keep_data_keeps_and_says_where(tmp_path: Path, database_url: str) -> None:
    tmpdir = tmp_path / "tmp"
    proc = run_bench(tmpdir, *TINY, *engine(database_url), "--skip-rt", "--keep-data")
    assert proc.returncode == 0, proc.stderr
    kept = re.search(r"^kept the data directory (\S+) \(CA keys and an admin token inside", proc.stderr,
                     re.MULTILINE)
    assert kept, proc.stderr
    data_dir = Path(kept.group(1))
    assert data_dir.parent == tmpdir and (data_dir / "ca").is_dir()
    assert (data_dir / "bench-admin-token").exists()


def test_a_given_data_dir_is_never_removed_even_on_error(tmp_path: Path) -> None:
    tmpdir, data_dir = tmp_path / "tmp", tmp_path / "mine"
    # mdm init fails: nothing listens on port 1
    bad_db = ["--database-url", "postgresql+asyncpg://postgres@127.0.0.1:1/nope"]
    proc = run_bench(tmpdir, *TINY, *bad_db, "--data-dir", str(data_dir))
    assert proc.returncode == 1 and "mdm init failed" in proc.stderr and "Traceback" not in proc.stderr
    assert data_dir.is_dir()
    # the same failure with a temporary directory: removed
    proc = run_bench(tmpdir, *TINY, *bad_db)
    assert proc.returncode == 1 and "mdm init failed" in proc.stderr
    assert list(tmpdir.iterdir()) == []


def _interruptible() -> None:
    """The bench as started from a terminal: a job run in the background (CI's) starts with SIGINT
    ignored, which its children inherit, and then Python and asyncio install no handler for it:
    Ctrl-C would never reach the bench (it went on polling and the test timed out)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_interrupted_run_stops_its_server_and_removes_the_dir(
    tmp_path: Path, database_url: str, sig: signal.Signals, code: int
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdm", "bench", "ios", *TINY, *engine(database_url), "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bench_env(tmpdir),
        preexec_fn=_interruptible,
    )
    seen: list[str] = []
    server_pid = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            found = re.match(r"mdm serve \(pid (\d+)\)", line)
            if found:
                server_pid = int(found.group(1))
            if line.startswith("(a) idle 1s/120s"):  # well inside the idle phase
                break
        assert server_pid is not None and any(s.startswith("(a) idle") for s in seen), "".join(seen)
        assert len(list(tmpdir.iterdir())) == 1  # the data directory exists now
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            if server_pid is not None:
                # A bench killed here leaves its server running on this worker's database, where
                # it would take later tests' bulk operations and the outbox's leader lock.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server_pid, signal.SIGKILL)
    assert proc.returncode == code, "".join(seen) + rest
    assert "Traceback" not in rest
    assert list(tmpdir.iterdir()) == []
    with pytest.raises(ProcessLookupError):  # its server is gone too
        for _ in range(50):
            os.kill(server_pid, 0)
            time.sleep(0.1)


def test_rt_delivery_must_not_be_negative(tmp_path: Path) -> None:
    proc = run_bench(tmp_path / "tmp", "--devices", "3", "--rt-delivery", "-1")
    assert proc.returncode == 2
    assert "--rt-delivery" in proc.stderr and "Traceback" not in proc.stderr
    assert list((tmp_path / "tmp").iterdir()) == []  # refused before anything was prepared


def test_rt_delivery_duration_must_be_positive(tmp_path: Path) -> None:
    proc = run_bench(tmp_path / "tmp", "--devices", "3", "--rt-delivery-duration", "0")
    assert proc.returncode == 2
    assert "--rt-delivery-duration" in proc.stderr and "Traceback" not in proc.stderr
    assert list((tmp_path / "tmp").iterdir()) == []  # refused before anything was prepared
