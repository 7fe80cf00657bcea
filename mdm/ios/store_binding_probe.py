"""The binding look-up of a request whose binding is not cached, with the Idle poll's queue probe
in the same statement.

A cold Idle poll (after a restart, or once its cached binding expired) read its binding
(``store.BINDING_STMT``), then looked for a queued command: two round trips on PostgreSQL. Here
the binding's statement also says whether any command is queued for the device (an EXISTS on
``command_queue``, the condition of ``store.NEXT_ANY``); when none is, the queue hint is told so
(``QueueHint.mark_empty`` with the generation read before the statement: an enqueue that raced
with it is not hidden), and the poll answers from the hint without a second statement. When one
is queued, nothing changes: the channel reads and delivers it as before.
"""

from __future__ import annotations

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mdm.core.identity import BoundDevice
from mdm.core.queue_hint import QueueHint
from mdm.db import point_read
from mdm.db.models import Command, CommandQueueEntry, CommandStatus, Device
from mdm.ios.tables import IosDevice

_devices = Device.__table__.c
_ios = IosDevice.__table__.c
_q = CommandQueueEntry.__table__.c
_c = Command.__table__.c

# Whether the device has anything an Idle poll would offer (``store.NEXT_ANY``'s condition).
_QUEUED = (
    exists()
    .where(_q.device_id == _devices.id, _c.id == _q.command_id, _c.status == CommandStatus.PROCESSING.value)
    .label("queued")
)
BINDING_PROBE_STMT = (
    select(_devices.id, _devices.identifier, _devices.status, _QUEUED)
    .select_from(IosDevice.__table__.join(Device.__table__, _devices.id == _ios.device_id))
    .where(_ios.cert_fingerprint == bindparam("fp"))
)


class ProbingBindingSource:
    """``core.identity.BindingSource`` over ``ios_devices`` that feeds the queue hint."""

    __slots__ = ("engine", "hint")

    def __init__(self, engine: AsyncEngine, hint: QueueHint) -> None:
        self.engine = engine
        self.hint = hint

    async def __call__(self, fingerprint: bytes) -> BoundDevice | None:
        generation = self.hint.generation
        row = await point_read.first(self.engine, BINDING_PROBE_STMT, {"fp": fingerprint})
        if row is None:
            return None
        if not row.queued:
            self.hint.mark_empty(row.id, generation)
        return BoundDevice(row.id, row.identifier, row.status)
