"""Long-poll syncs: a sync with ``wait`` and nothing to answer is held open until work arrives
for the device (``wake``) or the time is up.

At most ``limit`` waiters in the process (a sync beyond it is answered at once, empty); a device
holds at most one (a second long poll of the same device ends the first one, which answers
empty). A waiter is removed in a ``finally``, so a client that disconnects (aiohttp cancels the
handler) frees its place at once. ``wake`` is called by the KES pusher (``wakeups.py``) and, for
wake-ups made on another replica, by the ``NOTIFY`` listener.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class LongPolls:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: dict[int, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def waiting(self, device_id: int) -> bool:
        return device_id in self._waiting

    def wake(self, device_id: int) -> bool:
        """Answer the device's waiting long poll; False when none waits here."""
        waiter = self._waiting.get(device_id)
        if waiter is None:
            return False
        waiter.set()
        return True

    def wake_all(self) -> None:
        for waiter in list(self._waiting.values()):
            waiter.set()

    @contextlib.asynccontextmanager
    async def slot(self, device_id: int) -> AsyncIterator[asyncio.Event | None]:
        """A waiter for the device (set when woken), or None when the process holds ``limit``
        waiters already. Registered before the caller looks for work, so that a wake-up between
        the look and the wait is not lost."""
        previous = self._waiting.pop(device_id, None)
        if previous is not None:
            previous.set()  # the device's older long poll answers now
        if len(self._waiting) >= self.limit:
            yield None
            return
        waiter = asyncio.Event()
        self._waiting[device_id] = waiter
        try:
            yield waiter
        finally:
            if self._waiting.get(device_id) is waiter:
                del self._waiting[device_id]


async def wait(waiter: asyncio.Event, seconds: float) -> bool:
    """True when woken within ``seconds``."""
    try:
        await asyncio.wait_for(waiter.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
