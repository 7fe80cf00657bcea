"""``mdm.bench.stats.cpu_seconds``: the CPU a process has used. For the bench's own process (an
in-process server, as the tests run it) it is read at the clock's resolution, not in /proc's 10 ms
ticks, so a handful of requests does not read as no CPU at all."""

from __future__ import annotations

import os
import time

from mdm.bench.stats import cpu_seconds


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_own_process_cpu_is_finer_than_a_clock_tick() -> None:
    before = cpu_seconds(os.getpid())
    _burn(0.002)
    after = cpu_seconds(os.getpid())
    assert before is not None and after is not None
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert 0.0015 < after - before < tick * 0.9  # ticks read 0 or a whole tick


def test_another_process_is_read_from_proc() -> None:
    init = cpu_seconds(1)
    assert init is not None and init >= 0
    assert cpu_seconds(2**22 + 7) is None  # no such process
