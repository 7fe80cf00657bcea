"""Sampling the server with py-spy during a phase, and summarising where its event loop spends time.

``py-spy record --nonblocking -f raw`` writes one line per distinct stack (``frame;frame;... count``).
The summary keeps the server's main thread: the asyncio loop (stacks through ``Runner.run``) and
the greenlets SQLAlchemy's asyncio layer runs ORM code in (their stacks start at the greenlet, not
at ``Runner.run``); stacks of other threads (``Thread._bootstrap``: aiosqlite's connection
threads, ``asyncio.to_thread`` workers) are left out. It reports, per function, the share of
samples in which it is on the stack (inclusive) and on top (self); ``Runner.run`` on top means
the loop was waiting for I/O.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else None


async def record(pid: int, seconds: float, out: Path, rate: int = 100) -> asyncio.subprocess.Process:
    binary = py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (pip install 'mdm[bench]' or pip install py-spy)")
    return await asyncio.create_subprocess_exec(
        binary,
        "record",
        "-p",
        str(pid),
        "-d",
        str(max(1, int(seconds))),
        "-r",
        str(rate),
        "--nonblocking",
        "-f",
        "raw",
        "-o",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)": merge the lines of one function.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def summarise(raw: Path, top: int = 25) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "Thread._bootstrap" in stack:
            continue
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    pct = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "inclusive": [(f, pct(n)) for f, n in inclusive.most_common(top * 2) if pct(n) < 99.5][:top],
        "self": [(f, pct(n)) for f, n in own.most_common(top)],
    }
