"""The RSS and CPU time of a process (latency samples live in ``mdm.sim.stats``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

RSS_KEYS = ("VmRSS", "VmHWM")
# RSS split into its anonymous (heap) and file-backed (page cache of mapped files) parts.
MEMORY_KEYS = (*RSS_KEYS, "RssAnon", "RssFile")


def rss_kib(pid: int, keys: Sequence[str] = RSS_KEYS) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of ``pid`` in KiB (or the other ``keys``), from
    /proc/<pid>/status."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = int(value.split()[0])
    return out


def rss_mib(pid: int, keys: Sequence[str] = RSS_KEYS) -> dict[str, float]:
    """``rss_kib`` in MiB, rounded to a tenth."""
    return {k: round(v / 1024, 1) for k, v in rss_kib(pid, keys).items()}


def load_average() -> str:
    """``uptime``'s line (load averages), printed with a bench's conditions."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time consumed so far by ``pid`` (all its threads), from /proc/<pid>/stat;
    None where there is no such process. The bench's own process (an in-process server) is read
    from the process clock instead: /proc counts in 10 ms ticks, and a few requests would read 0."""
    if pid == os.getpid():
        return time.process_time()
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
