"""Files a running server keeps in its data directory for the CLI on the same machine.

- ``mdm.pid``: the server's process id (``mdm reload`` signals it).
- ``run/state.json``: the configuration the server runs with, as per-key digests (values are not
  written: a database URL may hold a password), and the keys that wait for a restart. CLI commands
  that read the data directory compare it with the file on disk.
- ``run/reload.json``: the outcome of the last reload (a signal has no reply); ``mdm reload`` waits
  for it.

Only the standard library here: the CLI imports this without the server.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

PID_FILE = "mdm.pid"
RUN_DIR = "run"
STATE_FILE = "state.json"
RELOAD_FILE = "reload.json"


def running_pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def _write(path: Path, data: dict[str, Any]) -> None:
    """Atomically, mode 0600 from the start, in a 0700 directory."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1, sort_keys=True).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    _write(data_dir / RUN_DIR / STATE_FILE, state)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    return _read(data_dir / RUN_DIR / STATE_FILE)


def write_reload_status(data_dir: Path, status: dict[str, Any]) -> None:
    _write(data_dir / RUN_DIR / RELOAD_FILE, status)


def read_reload_status(data_dir: Path) -> dict[str, Any] | None:
    return _read(data_dir / RUN_DIR / RELOAD_FILE)


def remove_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / RUN_DIR / STATE_FILE).unlink()
