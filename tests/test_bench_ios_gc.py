"""``mdm bench ios`` measures with its own collector settled as the server's
(``mdm.bench.collector``): with the defaults the load tool ran full collections of 30-68 ms every
few seconds over its 2,000 simulated devices, each holding every flow in flight, and those pauses
were counted in the round trips' p99 as if they were the server's. The caller's settings come
back after the run."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from engines import ENGINE_FREE

from mdm.bench import ios, phases
from mdm.server.runtime import GC_THRESHOLDS

pytestmark = pytest.mark.slow


@ENGINE_FREE  # its own SQLite data directory and server
async def test_the_measured_phases_run_with_the_bench_collector_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_gc: tuple[int, int, int]
) -> None:
    seen: list[tuple[str, tuple[int, int, int], int]] = []
    idle, round_trips = phases.idle_phase, phases.round_trip_phase

    async def idle_recorded(*args: Any, **kwargs: Any) -> None:
        seen.append(("idle", gc.get_threshold(), gc.get_freeze_count()))
        await idle(*args, **kwargs)

    async def round_trips_recorded(*args: Any, **kwargs: Any) -> None:
        seen.append(("round trips", gc.get_threshold(), gc.get_freeze_count()))
        await round_trips(*args, **kwargs)

    monkeypatch.setattr(phases, "idle_phase", idle_recorded)
    monkeypatch.setattr(phases, "round_trip_phase", round_trips_recorded)
    report = await ios.run(
        ios.Options(devices=4, duration=1, data_dir=tmp_path / "bench", concurrency=2, rt_concurrency=2,
                    background_rate=5, rt_delivery=0),
        lambda _: None,
    )
    assert report.idle["requests"] > 0 and report.round_trip["requests"] > 0
    assert [name for name, _, _ in seen] == ["idle", "round trips"]
    for _, thresholds, frozen in seen:
        assert thresholds == GC_THRESHOLDS and frozen > 0  # the simulated devices out of reach
    assert gc.get_threshold() == default_gc and gc.get_freeze_count() == 0
