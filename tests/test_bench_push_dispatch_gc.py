"""``mdm bench push-dispatch`` drains under the push worker process's collector settings
(``mdm.server.runtime.settle_gc``: start-up's objects frozen, young collections rare): with
the defaults its CPU per wake-up was ~28 % above the real worker's, the difference being the
collector's work, not the dispatcher's. The caller's settings come back after the run."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from engines import ENGINE_FREE

from mdm.bench import push_dispatch
from mdm.push.dispatcher import PushDispatcher
from mdm.server.runtime import GC_THRESHOLDS


@ENGINE_FREE  # its own SQLite data directory
async def test_the_drain_runs_with_the_collector_settled_as_in_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_gc: tuple[int, int, int]
) -> None:
    seen: list[tuple[tuple[int, int, int], int]] = []
    run = PushDispatcher.run

    async def recording(self: PushDispatcher, *args: Any, **kwargs: Any) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        await run(self, *args, **kwargs)

    monkeypatch.setattr(PushDispatcher, "run", recording)
    url = f"sqlite+aiosqlite:///{tmp_path}/bench.db"
    report = await push_dispatch.run(url, 20, False, 10, 10, None, say=lambda _: None)
    assert report.woken == 20
    assert len(seen) == 1
    thresholds, frozen = seen[0]
    assert thresholds == GC_THRESHOLDS and frozen > 0
    assert gc.get_threshold() == default_gc and gc.get_freeze_count() == 0


@ENGINE_FREE
def test_a_backend_that_ended_during_a_phase_makes_no_negative_cpu() -> None:
    """The drain's backend CPU per wake-up was once -63.7 µs: the sum over the first reading
    counted a backend whose connection then closed, and the second reading found it gone."""
    from mdm.bench.push_dispatch import backends_used

    before = {101: 5.0, 102: 2.0, 103: 9.0}
    after = {101: 5.5, 102: 2.25, 104: 0.5}  # 103 ended, 104 opened meanwhile
    assert backends_used(before, after) == pytest.approx(0.5 + 0.25 + 0.5)
    assert backends_used({101: 3.0}, {101: 0.25}) == 0.0  # the pid of a newer backend
