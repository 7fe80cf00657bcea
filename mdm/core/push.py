"""The push seam (DESIGN §6): how a platform's push client wakes devices that have work.

A platform plugin registers one ``Pusher`` per protocol in ``ServerContext.pushers`` at start-up.
Command enqueue (single and bulk) and the NotNow back-off call ``Pushers.wake`` **after** their
transaction commits: a push must never announce a command that a rollback took back. Without a
registered pusher ``wake`` does nothing and nothing is lost: the device fetches its commands at
its next poll or check-in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol as TypingProtocol

from mdm.db.models import Protocol

log = logging.getLogger("mdm.push")


class Pusher(TypingProtocol):
    """Wakes devices of one protocol. Implementations must not raise for a device they cannot
    reach (no push token, expired certificate): they record it and return; a push is a hint."""

    async def wake(self, device_id: int, reason: str) -> None: ...

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None: ...


class Pushers:
    """The registered pushers by protocol; ``wake`` is the one call the rest of the code makes."""

    def __init__(self) -> None:
        self._by_protocol: dict[Protocol, Pusher] = {}

    def register(self, protocol: Protocol, pusher: Pusher) -> None:
        if protocol in self._by_protocol:
            raise ValueError(f"a pusher for {protocol.name} is already registered")
        self._by_protocol[protocol] = pusher

    def unregister(self, protocol: Protocol) -> None:
        self._by_protocol.pop(protocol, None)

    def get(self, protocol: Protocol | int) -> Pusher | None:
        return self._by_protocol.get(Protocol(protocol))

    async def wake(self, protocol: Protocol | int, device_ids: Iterable[int], reason: str) -> None:
        """Wake these devices (of one protocol); a failing pusher is logged, never raised: the
        caller's work is already committed and the device still gets it at its next poll."""
        pusher = self.get(protocol)
        if pusher is None:
            return
        ids = list(device_ids)
        if not ids:
            return
        try:
            if len(ids) == 1:
                await pusher.wake(ids[0], reason)
            else:
                await pusher.wake_many(ids, reason)
        except Exception:
            log.exception("push to %d %s device(s) failed; they get their work at the next poll",
                          len(ids), Protocol(protocol).name.lower())
