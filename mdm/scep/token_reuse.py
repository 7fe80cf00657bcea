"""One-time tokens presented again (a used SCEP challenge, a downloaded enrollment link): the
``security_token_reused`` event, at most once per token per interval, from bounded memory, so a
client replaying a used token in a loop costs no write per request."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

from cachetools import TTLCache

from mdm.core import events
from mdm.db.engine import Database
from mdm.scep.event_types import SECURITY_TOKEN_REUSED

log = logging.getLogger("mdm.security")

REPORT_INTERVAL_SECONDS = 3600.0
MAX_TOKENS = 10_000


class ReuseReports:
    """Which reused tokens were reported within the interval (the oldest forgotten first)."""

    def __init__(self, maxsize: int = MAX_TOKENS, ttl: float = REPORT_INTERVAL_SECONDS) -> None:
        self._seen: TTLCache[Hashable, bool] = TTLCache(maxsize=maxsize, ttl=ttl)

    def first(self, key: Hashable) -> bool:
        """True once per ``key`` per interval."""
        if key in self._seen:
            return False
        self._seen[key] = True
        return True


async def report(db: Database, reports: ReuseReports, key: Hashable, **body: Any) -> None:
    """Write ``security_token_reused`` in a transaction of its own unless ``key`` was reported
    lately; a failing database is logged, never raised (the refusal goes on)."""
    log.warning("a used one-time %s was presented again (%s)", body.get("kind"), body.get("peer") or "?")
    if not reports.first(key):
        return
    try:
        async with db.transaction() as session:
            events.emit(session, SECURITY_TOKEN_REUSED, **body)
    except Exception:
        log.exception("could not record the security event")
