"""A cancelled idle load stops, also when the cancellation reaches a request as a TimeoutError.

CI once saw ``mdm bench ios`` go on polling for a minute after Ctrl-C: aiohttp's request timer
turns a cancellation that meets its own deadline into a ``TimeoutError``, the idle worker counted
it as a timed-out poll and polled on, and the phase's ``gather`` waited for it. A worker whose
task is being cancelled (``Task.cancelling()``) now stops whatever its request raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mdm.sim.fleet import Fleet


class _Member:
    udid = "00008030-000000000000001E"

    def idle_request(self, sign: bool = True) -> tuple[bytes, dict[str, str]]:
        return b"<plist/>", {}


async def _put_turning_cancel_into_timeout(*_: Any) -> tuple[int, bytes]:
    try:
        await asyncio.sleep(1.0)
    except asyncio.CancelledError:
        raise TimeoutError from None  # what aiohttp's timer does when its deadline and a cancel meet
    return 200, b""


@pytest.mark.parametrize("mode", ["signature"])
async def test_a_cancelled_idle_load_stops_though_a_request_said_timeout(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    fleet = Fleet([_Member()], server_url="http://127.0.0.1:9/mdm/server",  # type: ignore[list-item]
                  checkin_url="http://127.0.0.1:9/mdm/checkin", topic="t", mode=mode)  # type: ignore[arg-type]
    monkeypatch.setattr(fleet, "_put", _put_turning_cancel_into_timeout)
    stop = asyncio.Event()
    load = asyncio.create_task(fleet.idle_load(60, concurrency=2, stop=stop))
    try:
        await asyncio.sleep(0.2)
        load.cancel()
        done, _ = await asyncio.wait({load}, timeout=3)
        assert load in done, "the idle load went on after its task was cancelled"
        assert load.cancelled()
    finally:
        stop.set()
        await asyncio.gather(load, return_exceptions=True)
        await fleet.aclose()
