"""The "eas" traffic light, from the discovery row (one primary-key read) and the runner's health
(memory): grey when [eas] is off; red when every server fails or the last run failed; yellow when
the last run was partial, a cluster server is down, nothing was discovered yet or the last run is
older than three intervals; green otherwise."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.status import AreaStatus, Light
from mdm.db.models import utcnow
from mdm.eas import store
from mdm.eas.config import EasConfig
from mdm.eas.seams import CmdletRunner, ServerHealth

AREA = "eas"
DISABLED = "Exchange ActiveSync not configured ([eas] enabled = false)"
STALE_INTERVALS = 3


def failing(server: ServerHealth) -> bool:
    """The server's last call failed (and nothing succeeded since)."""
    if server.last_error_at is None:
        return False
    return server.last_ok_at is None or server.last_error_at >= server.last_ok_at


class EasSource:
    area = AREA

    def __init__(self, config: Callable[[], EasConfig], runner: Callable[[], CmdletRunner | None]) -> None:
        self._config = config
        self._runner = runner

    async def status(self, session: AsyncSession) -> AreaStatus:
        settings = self._config()
        runner = self._runner()
        if not settings.enabled or runner is None:
            return AreaStatus(AREA, Light.GREY, DISABLED)
        health: Sequence[ServerHealth] = runner.health()
        down = [s.name for s in health if failing(s)]
        row = await store.discovery_row(session)
        details: dict[str, Any] = {"mode": settings.mode, "servers": len(health), "servers_down": down}
        if row is not None:
            details.update(
                outcome=row.outcome,
                started_at=row.started_at.isoformat() if row.started_at else None,
                finished_at=row.finished_at.isoformat() if row.finished_at else None,
                mailboxes=row.mailboxes,
                devices=row.devices,
                policies=row.policies,
                failed_mailboxes=row.failed_mailboxes,
                vanished=row.vanished,
            )
        if health and len(down) == len(health):
            errors = "; ".join(f"{s.name}: {s.last_error or s.last_error_reason}" for s in health)
            return AreaStatus(AREA, Light.RED, f"every Exchange server fails ({errors})", details)
        if row is not None and row.outcome == "failed":
            return AreaStatus(AREA, Light.RED, f"the last discovery failed: {row.error}", details)
        if down:
            return AreaStatus(AREA, Light.YELLOW, f"Exchange server(s) down: {', '.join(down)}", details)
        if row is None or row.finished_at is None:
            if row is not None and row.started_at is not None:
                return AreaStatus(AREA, Light.YELLOW, "the first discovery is running", details)
            return AreaStatus(AREA, Light.YELLOW, "no discovery has run yet", details)
        if row.outcome == "partial":
            return AreaStatus(AREA, Light.YELLOW, f"the last discovery was partial: {row.error}", details)
        if utcnow() - row.finished_at > timedelta(
            seconds=STALE_INTERVALS * settings.discovery_interval_seconds
        ):
            return AreaStatus(
                AREA,
                Light.YELLOW,
                f"no discovery since {row.finished_at:%Y-%m-%d %H:%M} UTC "
                f"(more than {STALE_INTERVALS} intervals)",
                details,
            )
        return AreaStatus(AREA, Light.GREEN, None, details)
