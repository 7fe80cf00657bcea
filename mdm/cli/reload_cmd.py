"""``mdm reload``: SIGHUP to the running server, then its answer from ``run/reload.json``.

A signal has no reply, so the server writes the outcome of each reload (a sequence number per
process) and this command waits, bounded, for an outcome newer than the one it saw before.
Exit status: 0 applied (possibly with keys that need a restart), 1 refused or a certificate
problem, or no answer.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from mdm.cli.common import CliError
from mdm.server.runfiles import read_reload_status, running_pid


def _seq(status: dict[str, Any] | None, pid: int) -> int:
    if status is None or status.get("pid") != pid or not isinstance(status.get("seq"), int):
        return 0
    seq: int = status["seq"]
    return seq


def run_reload(data: Path, timeout: float) -> int:
    pid = running_pid(data)
    if pid is None:
        raise CliError(f"no running server for {data} (no live pid in mdm.pid)")
    seen = _seq(read_reload_status(data), pid)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise CliError(f"cannot signal the server (pid {pid}): {exc.strerror}") from None
    deadline = time.monotonic() + max(timeout, 0.1)
    status = read_reload_status(data)
    while _seq(status, pid) <= seen:
        if time.monotonic() >= deadline:
            raise CliError(
                f"asked the server (pid {pid}) to reload, but it did not report within {timeout:g} s "
                f"(no new {data / 'run' / 'reload.json'}); see its log"
            )
        time.sleep(0.1)
        status = read_reload_status(data)
    assert status is not None
    return _report(pid, status)


def _report(pid: int, status: dict[str, Any]) -> int:
    applied: list[str] = status.get("applied") or []
    restart: list[str] = status.get("restart_needed") or []
    problems: list[str] = status.get("certificate_problems") or []
    refused = status.get("config") == "refused"
    if not refused:
        what = f"applied: {', '.join(applied)}" if applied else "configuration unchanged"
        print(f"server (pid {pid}) reloaded; {what}")
    if restart:
        earlier = " (from an earlier reload)" if refused else ""
        print(f"needs a restart to take effect{earlier}: {', '.join(restart)} (e.g. `systemctl restart mdm`)")
    kept = "; ".join(problems)
    print(f"certificates: kept the previous ones for {kept}" if problems else "certificates: re-read")
    if refused:
        raise CliError(
            f"reload refused, the server (pid {pid}) keeps running with its previous configuration: "
            f"{status.get('error')}"
        )
    if status.get("error"):
        raise CliError(f"reload incomplete: {status['error']}")
    if problems:
        raise CliError("reload incomplete: a certificate could not be loaded (see above)")
    return 0
