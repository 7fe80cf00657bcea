"""The ``android`` light (KES devices on the ``kes`` listener):

- grey: the kes listener is disabled (``[listeners.kes] enabled = false``);
- red: the listener is enabled but not bound (devices cannot reach the service);
- yellow: FCM is not configured (devices only sync on their interval: commands wait up to
  ``[kes] sync_interval_seconds``), or, in a sample of up to ``sample`` (500) devices taken along
  the primary key from a random place, ``stale_ratio`` (10 %) and at least ``min_stale`` (5) of
  the managed devices have not synced for longer than 3 x their sync interval;
- green otherwise.

The sample is an estimate of the fleet (exact for fleets smaller than the sample) at the cost of
one bounded index range, whatever the size of the fleet.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.status import AreaStatus, Light
from mdm.db.enums import DeviceStatus
from mdm.db.models import utcnow
from mdm.kes import store_status as store

STALE_FACTOR = 3


class AndroidSource:
    area = "android"

    def __init__(
        self,
        enabled: Callable[[], bool],
        bound: Callable[[], bool],
        fcm_configured: Callable[[], bool],
        default_interval: Callable[[], int],
        *,
        sample: int = 500,
        stale_ratio: float = 0.1,
        min_stale: int = 5,
        rng: random.Random | None = None,
    ) -> None:
        self.enabled = enabled
        self.bound = bound
        self.fcm_configured = fcm_configured
        self.default_interval = default_interval
        self.sample = sample
        self.stale_ratio = stale_ratio
        self.min_stale = min_stale
        self.rng = rng or random.Random()  # noqa: S311 - where to sample, not a secret

    async def status(self, session: AsyncSession) -> AreaStatus:
        if not self.enabled():
            return AreaStatus(self.area, Light.GREY, "the kes listener is disabled (listeners.kes.enabled)")
        if not self.bound():
            return AreaStatus(self.area, Light.RED, "the kes listener is not listening: Android devices "
                              "cannot reach the service (see the listener_failed events and the log)")
        sampled, stale = await self._stale(session)
        details: dict[str, Any] = {"fcm_configured": self.fcm_configured(), "sampled": sampled,
                                   "not_synced_for_3_intervals": stale}
        yellow: list[str] = []
        if not details["fcm_configured"]:
            yellow.append("FCM is not configured: Android devices get commands only at their next "
                          f"periodic sync (every {self.default_interval()} s)")
        if stale >= self.min_stale and stale >= self.stale_ratio * sampled:
            yellow.append(f"{stale} of {sampled} sampled Android devices have not synced for longer than "
                          f"{STALE_FACTOR} x their sync interval")
        if yellow:
            return AreaStatus(self.area, Light.YELLOW, "; ".join(yellow), details)
        return AreaStatus(self.area, Light.GREEN, None, details)

    async def _stale(self, session: AsyncSession) -> tuple[int, int]:
        highest = await store.highest_id(session)
        if highest is None:
            return 0, 0
        rows = await store.sync_sample(session, self.rng.randint(1, highest), self.sample)
        now = utcnow()
        default = self.default_interval()
        managed = [r for r in rows if r.status == DeviceStatus.OK.value]
        stale = 0
        for r in managed:
            last: datetime = r.last_sync_at or r.bound_at or r.registered_at
            if now - last > timedelta(seconds=STALE_FACTOR * (r.sync_interval or default)):
                stale += 1
        return len(managed), stale
