"""The EAS ``Pusher`` (``mdm.core.push``): there is no device to wake, the service runs EAS
commands itself. Waking means telling the command executor that commands were queued, so that it
runs them now instead of at its next poll (``[eas] command_poll_seconds``, which also catches the
commands other replicas queued)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from mdm.db.models import utcnow


class EasPusher:
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._timers: set[asyncio.TimerHandle] = set()

    async def wake(self, device_id: int, reason: str) -> None:
        self._wake()

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        self._wake()

    async def wake_at(self, device_id: int, due: datetime, reason: str) -> None:
        delay = max(0.0, (due - utcnow()).total_seconds())
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            self._wake()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
