"""SQLite's in-process write queue: one transaction holds it at a time (``Database.transaction``).

An ``asyncio.Lock`` hands the queue over one waiter per turn of the event loop: the releaser wakes
the first waiter, which takes the queue only when the loop next runs it. On a saturated loop a turn
is 10-50 ms, so once a few transactions queued (behind one that yielded while it held the queue),
the queue drained at one transaction per turn while new requests kept joining its tail: 50
connections kept ~47 transactions queued, each waiting ~1 s, though each held it 1-2 ms (the
write-queue log: "behind 47 transactions, 20.8 ms each ... held it 1 ms").

Here an *inline* transaction (``transaction(inline=True)``: statements on the loop's thread, no
yield while it holds the queue, unless another process's lock sends a statement to a thread) takes
the queue at once whenever nobody holds it, even with others waiting: it is done before a waiter
woken meanwhile gets to run. Waiters are woken in order; a woken inline waiter wakes the inline
waiters right behind it too, so a run of them drains in one turn instead of one turn each. A
woken waiter that finds the queue taken (a barger that yielded) waits again in its place. Mutual
exclusion is unchanged: ``held`` is taken and released only on the loop's thread.
"""

from __future__ import annotations

import asyncio
import collections


class _Waiter:
    __slots__ = ("future", "inline")

    def __init__(self, future: asyncio.Future[None], inline: bool) -> None:
        self.future = future
        self.inline = inline


class WriteQueue:
    def __init__(self) -> None:
        self.held = False
        self._waiters: collections.deque[_Waiter] = collections.deque()

    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, inline: bool = False) -> None:
        if not self.held and (inline or not self._waiters):
            self.held = True
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), inline)
        self._waiters.append(waiter)
        try:
            while True:
                await waiter.future
                if not self.held:
                    self.held = True
                    self._waiters.remove(waiter)
                    return
                waiter.future = loop.create_future()  # taken by a barger meanwhile: wait in place
        except BaseException:
            self._waiters.remove(waiter)
            if not self.held:
                self._wake()  # this one may have been woken: pass the turn on
            raise

    def release(self) -> None:
        self.held = False
        self._wake()

    def _wake(self) -> None:
        """Wake the first waiter (if not woken yet) and, if it is inline, the inline ones right
        behind it."""
        for index, waiter in enumerate(self._waiters):
            if index and not waiter.inline:
                return
            if not waiter.future.done():
                waiter.future.set_result(None)
            if not waiter.inline:
                return
