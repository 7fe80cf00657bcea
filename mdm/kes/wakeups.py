"""Wake-ups of KES devices: the KES ``Pusher`` is wrapped so that a wake-up first answers the
device's waiting long poll (this replica at once; the others through ``NOTIFY mdm_kes_wake``
on PostgreSQL), then goes to FCM (the push dispatcher) when one is configured.

Whoever wakes a KES device (a new command: ``command_service`` after its commit; a bulk batch;
a new policy: ``ctx.pushers.wake(Protocol.KES, ids, "policy")``) thus reaches it both ways: FCM
where it can be reached, the long poll where it cannot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from mdm.core.identity_notify import listen as listen_for
from mdm.core.push import Pusher
from mdm.db.engine import Database
from mdm.kes import store_sync
from mdm.kes.longpoll import LongPolls

log = logging.getLogger("mdm.kes.wakeups")

CHANNEL = "mdm_kes_wake"
_MAX_PAYLOAD = 7000  # NOTIFY payloads are limited to 8000 bytes


class KesPusher:
    """``Pusher`` of ``Protocol.KES``: long polls first, then ``inner`` (FCM), if any."""

    def __init__(
        self, inner: Pusher | None, longpolls: LongPolls, woken: Callable[[int], None], db: Database
    ) -> None:
        self.inner = inner
        self.longpolls = longpolls
        self.woken = woken  # drops what the sync caches about the device
        self.db = db

    def _local(self, device_ids: Iterable[int]) -> list[int]:
        ids = list(device_ids)
        for device_id in ids:
            self.woken(device_id)
            self.longpolls.wake(device_id)
        return ids

    async def wake(self, device_id: int, reason: str) -> None:
        await self.wake_many([device_id], reason)

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        ids = self._local(device_ids)
        await self._notify(ids)
        if self.inner is not None:
            if len(ids) == 1:
                await self.inner.wake(ids[0], reason)
            else:
                await self.inner.wake_many(ids, reason)

    async def wake_at(self, device_id: int, due: datetime, reason: str) -> None:
        if self.inner is not None:
            await self.inner.wake_at(device_id, due, reason)

    async def _notify(self, device_ids: list[int]) -> None:
        """Tell the other replicas (PostgreSQL); never raises: a wake-up is a hint."""
        if self.db.is_sqlite or not device_ids:
            return
        try:
            await store_sync.notify(self.db.engine, CHANNEL, list(_payloads(device_ids)))
        except Exception as exc:  # the devices still get their work at their next sync
            log.warning("could not notify the other replicas of %d wake-up(s): %s", len(device_ids), exc)


def _payloads(device_ids: list[int]) -> Iterable[str]:
    chunk: list[str] = []
    size = 0
    for device_id in device_ids:
        item = str(device_id)
        if size + len(item) + 1 > _MAX_PAYLOAD and chunk:
            yield ",".join(chunk)
            chunk, size = [], 0
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield ",".join(chunk)


async def listen(
    url: str, longpolls: LongPolls, woken: Callable[[int], None], forget_all: Callable[[], None],
    *, retry_seconds: float = 2.0,
) -> None:
    """Wake-ups made on other replicas (PostgreSQL): answer this replica's long polls of those
    devices and forget what the sync caches about them. Runs until cancelled; after a (re)connect
    every cache is dropped and every long poll answered (notifications sent meanwhile are lost)."""

    def on_wake(device_id: int) -> None:
        woken(device_id)
        longpolls.wake(device_id)

    def on_connection(listening: bool) -> None:
        forget_all()
        if listening:  # wake-ups sent while deaf are lost: every long poll looks again
            longpolls.wake_all()

    await listen_for(url, {CHANNEL: on_wake}, on_connection, what="KES wake-up", logger=log,
                     retry_seconds=retry_seconds)
