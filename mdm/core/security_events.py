"""Security events for rejected requests, at a bounded cost.

A request whose identity (or message) is refused is worth a security event, but an
unauthenticated flood must not become one database write per request. Per (event type, source,
reason) the first ``verbatim`` occurrences of each interval are written one by one, as before;
the rest are only counted in memory and written by ``flush`` (a background task, once per
interval) as one ``security_rejections_aggregated`` event per key with the count, the first and
last time seen and the first suppressed occurrence as a sample, all in one transaction.

Memory is bounded: at most ``max_sources`` keys are tracked per interval; occurrences with a new
key beyond that are counted under a catch-all key (source and reason ``*``), never written one by
one. IPv6 sources are grouped by /64 (what one host or customer typically holds), so that walking
through addresses does not buy more verbatim rows.

Single event loop, no awaits inside ``admit``: no lock is needed.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mdm.core import events, metrics
from mdm.core.event_types import SECURITY_REJECTIONS_AGGREGATED
from mdm.db.engine import Database

log = logging.getLogger("mdm.security")

AGGREGATED = SECURITY_REJECTIONS_AGGREGATED.name  # the event type's name, e.g. to filter on
CATCH_ALL = "*"


@dataclass(slots=True)
class _Tally:
    written: int = 0  # occurrences written one by one this interval
    count: int = 0  # occurrences only counted (to go into the aggregate)
    first_seen: float = 0.0  # time.time() of the first and last counted occurrence
    last_seen: float = 0.0
    sample: dict[str, Any] | None = None


def _iso(timestamp: float) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


@functools.lru_cache(maxsize=4096)  # a flood repeats its few addresses: parse each once
def source_key(peer: str | None) -> str:
    """The address a rejection is attributed to: the IPv4 address, or the IPv6 /64."""
    if not peer:
        return "-"
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return CATCH_ALL
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RejectionLog:
    def __init__(
        self, verbatim_per_interval: int = 5, interval_seconds: float = 60.0, max_sources: int = 1000
    ) -> None:
        self.verbatim = verbatim_per_interval
        self.interval = interval_seconds
        self.max_sources = max_sources
        self._tallies: dict[tuple[str, str, str], _Tally] = {}
        self._counters: dict[tuple[str, str], Any] = {}

    def __len__(self) -> int:
        return len(self._tallies)

    def admit(self, event_type: str, peer: str | None, reason: str, sample: dict[str, Any]) -> bool:
        """True: write this occurrence as its own event now. False: it has been counted for the
        next aggregate (the caller writes nothing)."""
        key = (event_type, source_key(peer), reason)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) < self.max_sources:
                tally = self._tallies[key] = _Tally()
            else:
                key = (event_type, CATCH_ALL, CATCH_ALL)
                tally = self._tallies.get(key)
                if tally is None:
                    # Beyond the bound nothing is written one by one (a catch-all per event type).
                    tally = self._tallies[key] = _Tally(written=self.verbatim)
        if tally.written < self.verbatim:
            tally.written += 1
            self._count(event_type, "written")
            return True
        now = time.time()
        tally.count += 1
        tally.first_seen = tally.first_seen or now
        tally.last_seen = now
        if tally.sample is None:
            tally.sample = sample
        self._count(event_type, "aggregated")
        return False

    def _count(self, event_type: str, recorded: str) -> None:
        counter = self._counters.get((event_type, recorded))
        if counter is None:
            counter = self._counters[(event_type, recorded)] = metrics.SECURITY_REJECTIONS.labels(
                event_type, recorded
            )
        counter.inc()

    def pending(self) -> int:
        """Occurrences counted and not yet written."""
        return sum(t.count for t in self._tallies.values())

    async def flush(self, db: Database) -> int:
        """Start a new interval; write what was only counted in the last one (one transaction).
        Returns the number of aggregate events written. On a database error the counts are kept
        for the next flush."""
        tallies, self._tallies = self._tallies, {}
        due = [(key, t) for key, t in tallies.items() if t.count]
        if not due:
            return 0
        try:
            async with db.transaction() as session:
                for (event_type, source, reason), t in due:
                    events.emit(
                        session,
                        SECURITY_REJECTIONS_AGGREGATED,
                        event=event_type,
                        source=source,
                        reason=reason,
                        count=t.count,
                        first_seen=_iso(t.first_seen),
                        last_seen=_iso(t.last_seen),
                        interval_seconds=self.interval,
                        sample=t.sample,
                    )
        except Exception as exc:
            log.warning("could not record %d aggregated security event(s), keeping them: %s", len(due), exc)
            self._keep(due)
            return 0
        total = sum(t.count for _, t in due)
        log.warning(
            "%d rejected request(s) not recorded one by one: %d aggregated security event(s) written "
            "(largest: %s from %s, %d)",
            total,
            len(due),
            *max(((k[2], k[1], t.count) for k, t in due), key=lambda item: item[2]),
        )
        return len(due)

    def _keep(self, due: list[tuple[tuple[str, str, str], _Tally]]) -> None:
        """Put unwritten counts back into the current interval, within the same bound."""
        for key, old in due:
            tally = self._tallies.get(key)
            if tally is None:
                if len(self._tallies) >= self.max_sources:
                    key = (key[0], CATCH_ALL, CATCH_ALL)
                fresh = _Tally(written=self.verbatim) if key[1] == CATCH_ALL else _Tally()
                tally = self._tallies.setdefault(key, fresh)
            tally.count += old.count
            tally.sample = tally.sample or old.sample
            seen = [t for t in (tally.first_seen, old.first_seen) if t]
            tally.first_seen = min(seen) if seen else 0.0
            tally.last_seen = max(tally.last_seen, old.last_seen)

    async def run(self, db: Database) -> None:
        """The background task: one flush per interval."""
        while True:
            await asyncio.sleep(self.interval)
            await self.flush(db)  # never raises for the database: counts are kept on failure
