"""The traffic-light document (``GET /api/v1/status``): every area of ``mdm.core.status.AREAS``
asked of its registered source, concurrently, each in its own read session and under a timeout.

A source that fails or is too slow shows grey ("could not be computed: ...") with a log line; an
area without a source shows grey ("not configured in this build"). The document is kept for
``ttl`` seconds, and concurrent callers share one computation, so that monitoring that polls
often costs one round of (cheap) queries per ``ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from mdm.core.status import AREAS, AreaStatus, Light, StatusSource, StatusSources, worst
from mdm.db.engine import Database
from mdm.db.models import utcnow

log = logging.getLogger("mdm.status")

NOT_CONFIGURED = "not configured in this build"
DEFAULT_TTL_SECONDS = 2.0
DEFAULT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class StatusDocument:
    overall: Light
    generated_at: datetime
    areas: list[AreaStatus]


class StatusReport:
    """Computes and caches the document over the registered sources."""

    def __init__(
        self,
        db: Database,
        sources: StatusSources,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.sources = sources
        self.ttl = ttl
        self.timeout = timeout
        self._monotonic = monotonic
        self._cached: tuple[float, StatusDocument] | None = None
        self._lock = asyncio.Lock()

    async def document(self) -> StatusDocument:
        cached = self._cached
        if cached is not None and self._monotonic() - cached[0] < self.ttl:
            return cached[1]
        async with self._lock:  # one computation for every caller waiting meanwhile
            cached = self._cached
            if cached is not None and self._monotonic() - cached[0] < self.ttl:
                return cached[1]
            document = await self.compute()
            self._cached = (self._monotonic(), document)
            return document

    async def compute(self) -> StatusDocument:
        areas = list(await asyncio.gather(*(self._area(area) for area in AREAS)))
        return StatusDocument(worst([a.light for a in areas]), utcnow(), areas)

    async def _area(self, area: str) -> AreaStatus:
        source = self.sources.get(area)
        if source is None:
            return AreaStatus(area, Light.GREY, NOT_CONFIGURED)
        try:
            status = await asyncio.wait_for(self._ask(source), self.timeout)
        except TimeoutError:
            log.warning("status: the %s light could not be computed within %.1f s", area, self.timeout)
            return AreaStatus(area, Light.GREY, f"could not be computed: no answer within {self.timeout:g} s")
        except Exception as exc:  # a failing source greys its own area, never the document
            log.warning("status: the %s light could not be computed: %s: %s", area, type(exc).__name__, exc)
            return AreaStatus(area, Light.GREY, f"could not be computed: {type(exc).__name__}: {exc}"[:500])
        if status.area != area:
            log.warning("status: the %s source answered for area %r", area, status.area)
            return AreaStatus(area, status.light, status.reason, status.details)
        return status

    async def _ask(self, source: StatusSource) -> AreaStatus:
        async with self.db.session() as session:
            return await source.status(session)
