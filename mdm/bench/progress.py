"""Progress lines for the benchmark's long phases: counts, rate and ETA, at most one line per
``interval`` seconds (plus the final one), e.g.
``enrolling 3,400/10,000 (34%) 820/s ETA 8s``.

Hand-written (forty lines) rather than a progress-bar library: the lines go to a log-friendly
stream (stderr, CI logs), where redrawing bars would only add escape codes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Say = Callable[[str], None]
INTERVAL = 1.0


def _eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A counted phase: ``update(done)`` as work completes; ``finish()`` prints the last line."""

    def __init__(self, say: Say, label: str, total: int, *, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.label, self.total, self.interval, self.clock = say, label, total, interval, clock
        self.start = self.last = clock()
        self.done = 0

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        percent = 100 * self.done // self.total if self.total else 100
        text = f"{self.label} {self.done:,}/{self.total:,} ({percent}%) {rate:,.0f}/s"
        if self.done >= self.total:
            return f"{text} in {elapsed:.1f}s"
        return f"{text} ETA {_eta((self.total - self.done) / rate)}" if rate > 0 else f"{text} ETA ?"

    def update(self, done: int) -> None:
        self.done = done
        now = self.clock()
        if now - self.last >= self.interval and done < self.total:
            self.last = now
            self.say(self.line())

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def finish(self) -> None:
        self.say(self.line())


async def timed(say: Say, label: str, duration: float, count: Callable[[], int] | None, *,
                interval: float = INTERVAL, unit: str = "requests") -> None:
    """For a phase that lasts ``duration`` seconds: elapsed, count and rate (when ``count`` is
    known while it runs) and ETA, every ``interval`` seconds until cancelled."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        await asyncio.sleep(interval)
        elapsed = loop.time() - start
        percent = min(100, int(100 * elapsed / duration)) if duration > 0 else 100
        done = "" if count is None else f" {count():,} {unit} {count() / elapsed:,.0f}/s"
        say(f"{label} {elapsed:.0f}s/{duration:.0f}s ({percent}%){done} ETA {_eta(duration - elapsed)}")
