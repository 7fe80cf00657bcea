"""The binding look-up of a request whose binding is not cached, with the Idle poll's queue probe
in the same statement.

A cold Idle poll (after a restart, or once its cached binding expired) read its binding
(``store.BINDING_STMT``), then looked for a queued command: two round trips on PostgreSQL. Here
the binding's statement also says whether any command is queued for the device (an EXISTS on
``command_queue``, the condition of ``store.NEXT_ANY``); when none is, the queue hint is told so
(``QueueHint.mark_empty`` with the generation read before the statement: an enqueue that raced
with it is not hidden), and the poll answers from the hint without a second statement. When one
is queued, nothing changes: the channel reads and delivers it as before.

On PostgreSQL, probes that arrive together share one statement (``CoalescedProbes``): a burst
of cold polls (a fleet back after an outage) made one statement per poll, and a backend woken
for each statement cost ~85-110 µs of its CPU at 600-900 probes/s against ~27 µs when kept busy
(measured straight on asyncpg, docs/PERFORMANCE.md): the cost is the wake-up, not the
look-up. Probes asked for while the loop runs one iteration are sent as one ``IN (...)``
statement in the next; while ``IN_FLIGHT`` such statements run, further probes wait and go
together in the next one. Each probe's statement starts after it was asked for, as its own
statement did: a deletion, an unbinding or a revocation committed before the request is seen.
The ``IN`` lists have fixed lengths (1, 2, 4, ... ``MAX_BATCH``, the last fingerprint repeated):
each length is its own prepared statement whose generic plan estimates its rows right, so
PostgreSQL keeps it (one ``= ANY($1)`` statement for every size re-planned small batches every
time: ~500 µs each). SQLite runs each probe on the loop's thread without yielding (``point_read``):
there is nothing to coalesce.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import LargeBinary, bindparam, exists, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

from mdm.core.identity import BoundDevice
from mdm.core.queue_hint import QueueHint
from mdm.core.store_queue_order import is_processing
from mdm.db import point_read
from mdm.db.models import Command, CommandQueueEntry, Device
from mdm.ios.tables import IosDevice

_devices = Device.__table__.c
_ios = IosDevice.__table__.c
_q = CommandQueueEntry.__table__.c
_c = Command.__table__.c

# Whether the device has anything an Idle poll would offer (``store.NEXT_ANY``'s condition).
# (``store_queue_order``: the device's queue rows drive, never the processing commands.)
_QUEUED = exists().where(_q.device_id == _devices.id, is_processing(_q.command_id)).label("queued")
BINDING_PROBE_STMT = (
    select(_devices.id, _devices.identifier, _devices.status, _QUEUED)
    .select_from(IosDevice.__table__.join(Device.__table__, _devices.id == _ios.device_id))
    .where(_ios.cert_fingerprint == bindparam("fp"))
)


# PostgreSQL: fingerprints per coalesced statement, and such statements running at once (below
# the kept readers, half the pool's connections: the other point look-ups keep some).
MAX_BATCH = 32
IN_FLIGHT = 4
SIZES = (1, 2, 4, 8, 16, 32)


def _batch_stmt(size: int) -> Select[Any]:
    fps = [bindparam(f"fp{i}", type_=LargeBinary) for i in range(size)]
    return (
        select(_ios.cert_fingerprint, _devices.id, _devices.identifier, _devices.status, _QUEUED)
        .select_from(IosDevice.__table__.join(Device.__table__, _devices.id == _ios.device_id))
        .where(_ios.cert_fingerprint.in_(fps))
    )


BATCH_STMTS = {size: _batch_stmt(size) for size in SIZES}


class CoalescedProbes:
    """Binding probes of one engine (PostgreSQL) sent together: see the module's docstring."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # fingerprint -> the futures of the probes waiting for it (in arrival order)
        self.waiting: dict[bytes, list[asyncio.Future[Row[Any] | None]]] = {}
        self.running = 0
        self.scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.statements = 0  # sent so far (tests, figures)

    async def probe(self, fingerprint: bytes) -> Row[Any] | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Row[Any] | None] = loop.create_future()
        self.waiting.setdefault(fingerprint, []).append(future)
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.scheduled and self.running < IN_FLIGHT:
            self.scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self.scheduled = False
        batch: dict[bytes, list[asyncio.Future[Row[Any] | None]]] = {}
        while self.waiting and len(batch) < MAX_BATCH and self.running < IN_FLIGHT:
            fingerprint = next(iter(self.waiting))
            futures = [f for f in self.waiting.pop(fingerprint) if not f.done()]  # (cancelled)
            if futures:
                batch[fingerprint] = futures
        if not batch:
            return
        self.running += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: dict[bytes, list[asyncio.Future[Row[Any] | None]]]) -> None:
        try:
            fingerprints = list(batch)
            size = next(n for n in SIZES if n >= len(fingerprints))
            padded = fingerprints + [fingerprints[-1]] * (size - len(fingerprints))
            self.statements += 1
            found = await point_read.rows(
                self.engine, BATCH_STMTS[size], {f"fp{i}": fp for i, fp in enumerate(padded)})
        except BaseException as exc:
            for futures in batch.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            by_fingerprint = {bytes(row.cert_fingerprint): row for row in found}
            for fingerprint, futures in batch.items():
                row = by_fingerprint.get(fingerprint)
                for future in futures:
                    if not future.done():
                        future.set_result(row)
        finally:
            self.running -= 1
            if self.waiting:
                self._schedule(asyncio.get_running_loop())


class ProbingBindingSource:
    """``core.identity.BindingSource`` over ``ios_devices`` that feeds the queue hint."""

    __slots__ = ("coalesced", "engine", "hint")

    def __init__(self, engine: AsyncEngine, hint: QueueHint) -> None:
        self.engine = engine
        self.hint = hint
        self.coalesced = None if engine.dialect.name == "sqlite" else CoalescedProbes(engine)

    async def __call__(self, fingerprint: bytes) -> BoundDevice | None:
        generation = self.hint.generation  # before the statement: an enqueue racing it is seen
        if self.coalesced is not None:
            row = await self.coalesced.probe(fingerprint)
        else:
            row = await point_read.first(self.engine, BINDING_PROBE_STMT, {"fp": fingerprint})
        if row is None:
            return None
        if not row.queued:
            self.hint.mark_empty(row.id, generation)
        return BoundDevice(row.id, row.identifier, row.status)
