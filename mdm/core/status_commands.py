"""The ``command_backlog`` light: the age of the oldest command still queued and the depth of the
queue (``command_queue`` holds only undelivered and in-flight commands), both read in bounded
time: the oldest is the queue's first primary-key entry, the depth is counted up to the red
threshold only.

- red: the oldest queued command is older than ``red_age`` (7 days), or ``red_depth`` (100,000)
  commands or more are queued;
- yellow: older than ``yellow_age`` (24 hours), or ``yellow_depth`` (10,000) or more queued;
- green otherwise (an empty queue included).

A device that stays offline keeps its commands queued: a yellow light that lasts names a device
that no longer checks in (``mdm command log DEVICE``) as often as a delivery problem.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import store_status as store
from mdm.core.status import AreaStatus, Light
from mdm.db.models import utcnow


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} hours"
    return f"{seconds // 60} minutes"


class CommandBacklogSource:
    area = "command_backlog"

    def __init__(
        self,
        *,
        yellow_age: timedelta = timedelta(hours=24),
        red_age: timedelta = timedelta(days=7),
        yellow_depth: int = 10_000,
        red_depth: int = 100_000,
    ) -> None:
        self.yellow_age = yellow_age
        self.red_age = red_age
        self.yellow_depth = yellow_depth
        self.red_depth = red_depth

    async def status(self, session: AsyncSession) -> AreaStatus:
        oldest = await store.oldest_queued(session)
        depth = await store.queue_depth_upto(session, self.red_depth)
        now = utcnow()
        age = now - oldest if oldest is not None else timedelta(0)
        details: dict[str, Any] = {
            "queued": depth if depth < self.red_depth else f"{self.red_depth}+",
            "oldest_queued_at": oldest.isoformat() if oldest is not None else None,
            "oldest_age_seconds": int(age.total_seconds()),
        }
        depth_text = f"{depth:,}{'+' if depth >= self.red_depth else ''} commands are queued"
        age_text = f"the oldest queued command has waited {_age(age)}"
        if age >= self.red_age or depth >= self.red_depth:
            reasons = [t for t, bad in ((age_text, age >= self.red_age),
                                        (depth_text, depth >= self.red_depth)) if bad]
            return AreaStatus(self.area, Light.RED, "; ".join(reasons) + " (devices are not fetching them)",
                              details)
        if age >= self.yellow_age or depth >= self.yellow_depth:
            reasons = [t for t, bad in ((age_text, age >= self.yellow_age),
                                        (depth_text, depth >= self.yellow_depth)) if bad]
            return AreaStatus(self.area, Light.YELLOW, "; ".join(reasons), details)
        return AreaStatus(self.area, Light.GREEN, None, details)
