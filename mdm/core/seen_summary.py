"""The periodic last-seen summary: how many distinct devices of a protocol checked in since the
last summary (``devices_seen``), instead of one event per check-in.

Exact and bounded: the devices seen are bits of a bitmap indexed by device id (ids are dense and
never reused: a million devices take 125 KB), filled from the batched last-seen writes, never
from the request path."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime

from mdm.core import events
from mdm.core.event_types import DEVICES_SEEN
from mdm.db.engine import Database
from mdm.db.models import utcnow

log = logging.getLogger("mdm.core")

SUMMARY_SECONDS = 3600.0
_GROW = 4096  # bytes added at a time (32,768 ids)


class SeenSummary:
    def __init__(self, protocol: str, interval_seconds: float = SUMMARY_SECONDS) -> None:
        self.protocol = protocol
        self.interval_seconds = interval_seconds
        self._bits = bytearray()
        self.count = 0  # distinct devices seen in the current interval
        self._since: datetime = utcnow()
        self._since_mono = time.monotonic()

    def add(self, device_ids: Iterable[int]) -> None:
        """Devices whose last-seen time was just written."""
        bits = self._bits
        for device_id in device_ids:
            index, bit = divmod(device_id, 8)
            if index >= len(bits):
                bits.extend(bytes(index + _GROW - len(bits)))
            mask = 1 << bit
            if not bits[index] & mask:
                bits[index] |= mask
                self.count += 1

    def due(self) -> bool:
        return time.monotonic() - self._since_mono >= self.interval_seconds

    async def report(self, db: Database) -> bool:
        """Write ``devices_seen`` for the interval that ends now (none when no device was seen)
        and start the next one. True when an event was written."""
        since, until, count = self._since, utcnow(), self.count
        self._bits, self.count = bytearray(), 0
        self._since, self._since_mono = until, time.monotonic()
        if count == 0:
            return False
        try:
            async with db.transaction() as session:
                events.emit(
                    session, DEVICES_SEEN, protocol=self.protocol, devices=count,
                    since=since.isoformat(), until=until.isoformat(),
                )
        except Exception:
            log.exception("could not record the %s last-seen summary", self.protocol)
            return False
        return True
