"""The "core_link" traffic light, read by every replica from the link-state row the delivering
replica keeps (one primary-key read: no count of the outbox per status call)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.status import AreaStatus, Light
from mdm.db.models import utcnow
from mdm.reporting import store

AREA = "core_link"
# Yellow when the oldest waiting event is older than this, or the row was not refreshed for this.
BACKLOG_AGE_SECONDS = 300.0
STALE_SECONDS = 60.0
_WHAT = {
    "tls_error": "refused TLS", "connect_error": "is unreachable", "timeout": "did not answer in time",
    "auth_failed": "refused our credentials", "bad_response": "answered garbage",
}


def _failure(reason: str | None) -> str:
    if reason and reason.startswith("http_"):
        return f"answered HTTP {reason[5:]}"
    return _WHAT.get(reason or "", f"failed ({reason or 'unknown'})")


def _hhmm(when: datetime) -> str:
    """The time in UTC, with the date when it is not today."""
    return when.strftime("%H:%M UTC" if when.date() == utcnow().date() else "%Y-%m-%d %H:%M UTC")


class CoreLinkSource:
    area = AREA

    def __init__(self, transport: str) -> None:
        self.transport = transport  # "none" | "generic" | "ksc"

    async def status(self, session: AsyncSession) -> AreaStatus:
        if self.transport == "none":
            return AreaStatus(AREA, Light.GREY, 'core link not configured ([reporting] transport = "none")')
        row = await store.read(session)
        if row is None:
            return AreaStatus(AREA, Light.YELLOW, "no replica has reported on the core link yet",
                              {"transport": self.transport})
        now = utcnow()
        oldest = row.oldest_undelivered_at
        oldest_age = 0.0 if oldest is None else (now - oldest).total_seconds()
        details: dict[str, Any] = {
            "transport": self.transport, "up": row.up, "since": row.since.isoformat(),
            "backlog": row.backlog, "oldest_undelivered_seconds": round(max(0.0, oldest_age), 1),
            "dead_letters": row.dead_letters, "consecutive_failures": row.consecutive_failures,
            "last_success_at": row.last_success_at.isoformat() if row.last_success_at else None,
            "deliverer": row.deliverer, "updated_at": row.updated_at.isoformat(),
        }  # fmt: skip
        if not row.up:
            detail = f": {row.last_failure_detail}" if row.last_failure_detail else ""
            reason = (f"core server {_failure(row.last_failure_reason)}{detail} "
                      f"(since {_hhmm(row.since)}, {row.consecutive_failures} attempts)")
            return AreaStatus(AREA, Light.RED, reason, details)
        if now - row.updated_at > timedelta(seconds=STALE_SECONDS):
            reason = (f"no replica has delivered events since {_hhmm(row.updated_at)} "
                      "(is the server running its reporting worker?)")
            return AreaStatus(AREA, Light.YELLOW, reason, details)
        if oldest_age > BACKLOG_AGE_SECONDS:
            return AreaStatus(AREA, Light.YELLOW, f"{row.backlog} event(s) wait for delivery, the oldest "
                              f"for {int(oldest_age // 60)} min", details)
        if row.dead_letters:
            return AreaStatus(AREA, Light.YELLOW, f"{row.dead_letters} event(s) dead-lettered "
                              "(mdm events dead-letter; replay them once the cause is fixed)", details)
        return AreaStatus(AREA, Light.GREEN, None, details)
