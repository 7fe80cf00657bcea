"""Dead letters, for administrators: list them, and put them back in the outbox (replay).

A replayed event is delivered after the events created since it was dead-lettered (it keeps its
id, uuid and ``created_at``; receivers order by those, not by arrival). "Replay all" works in
chunks of its own transactions, each reported by an ``events_replayed`` event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mdm.core import events as core_events
from mdm.core import store_outbox as outbox
from mdm.db.engine import Database
from mdm.reporting.event_types import EVENTS_REPLAYED

CHUNK = 1000


class DeadLetters:
    def __init__(self, db: Database, wake: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self._wake = wake  # the local worker, so that replayed events go out at once

    async def page(self, *, limit: int, after_id: int = 0, type_: str | None = None,
                   device_id: int | None = None) -> list[outbox.DeadEvent]:
        async with self.db.session() as session:
            return await outbox.dead_page(session, limit=limit, after_id=after_id, type_=type_,
                                          device_id=device_id)

    async def replay(self, ids: Sequence[int], *, by: str) -> int:
        """Put these dead letters back (ids that are not dead are ignored); answers how many."""
        async with self.db.transaction() as session:
            count = await outbox.requeue(session, sorted(set(ids)))
            if count:
                core_events.emit(session, EVENTS_REPLAYED, count=count, by=by)
        if count:
            self._wake()
        return count

    async def replay_all(self, *, by: str) -> int:
        total, after = 0, 0
        while True:
            async with self.db.transaction() as session:
                ids = await outbox.dead_ids(session, after_id=after, limit=CHUNK)
                count = await outbox.requeue(session, ids)
                if count:
                    core_events.emit(session, EVENTS_REPLAYED, count=count, by=by, all=True)
            total += count
            if len(ids) < CHUNK:
                break
            after = ids[-1]
        if total:
            self._wake()
        return total
