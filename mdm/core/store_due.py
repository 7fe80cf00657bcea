"""The due commands of a protocol whose commands the server itself executes (EAS: the service runs
cmdlets against Exchange, no device polls for them): a worker finds them here and takes each one
atomically, so that several replicas may run that worker.

A taken command is in flight with a *lease*: ``not_before`` is set to when the lease ends. A
replica that dies while running it leaves the row in flight; once the lease has passed, the row is
due again and another replica takes it (a wipe is never lost, it may at worst be requested twice,
which Exchange treats as one).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BindParameter, ColumnElement, Table, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.store_queue_order import is_processing
from mdm.db.models import Command, CommandQueueEntry, Device, Protocol, utcnow

_queue = cast(Table, CommandQueueEntry.__table__)
_commands = cast(Table, Command.__table__)
_devices = cast(Table, Device.__table__)


def _due(now_param: str) -> ColumnElement[bool]:
    q = _queue.c
    now: BindParameter[datetime] = bindparam(now_param)
    return or_(
        and_(q.in_flight.is_(False), or_(q.not_before.is_(None), q.not_before <= now)),
        # In flight with an expired lease: its runner died.
        and_(q.in_flight.is_(True), q.not_before.is_not(None), q.not_before <= now),
    )


# The command's status by key (``store_queue_order``): joined, a fleet bulk's processing commands
# under stale statistics were walked on every pass, the protocol's devices none of them.
_DUE = (
    select(_queue.c.command_id, _queue.c.device_id)
    .select_from(_queue.join(_devices, _devices.c.id == _queue.c.device_id))
    .where(_devices.c.protocol == bindparam("b_protocol"), is_processing(_queue.c.command_id),
           _due("b_now"))
    .order_by(_queue.c.priority.desc(), _queue.c.command_id)
    .limit(bindparam("b_limit"))
)

_TAKE = (
    update(_queue)
    .where(_queue.c.command_id == bindparam("b_id"), _due("b_now"))
    .values(in_flight=True, not_before=bindparam("b_lease"))
    .returning(_queue.c.command_id)
)


async def due_commands(session: AsyncSession, protocol: Protocol, limit: int) -> list[tuple[int, int]]:
    """(command_id, device_id) of queued commands of ``protocol``'s devices that are due: not in
    flight (or in flight with an expired lease), not deferred, highest priority first, then oldest."""
    rows = await session.execute(_DUE, {"b_protocol": int(protocol), "b_now": utcnow(), "b_limit": limit})
    return [(int(r.command_id), int(r.device_id)) for r in rows]


async def take(session: AsyncSession, command_id: int, lease_until: datetime) -> bool:
    """Take a due command: in flight until ``lease_until``. False when it is not due any more (a
    concurrent worker took it, it was recalled or deferred): one conditional UPDATE."""
    params = {"b_id": command_id, "b_now": utcnow(), "b_lease": lease_until}
    return (await session.execute(_TAKE, params)).first() is not None


async def extend(session: AsyncSession, command_id: int, lease_until: datetime) -> None:
    """Keep holding a taken command (a long run)."""
    await session.execute(
        update(_queue).where(_queue.c.command_id == command_id).values(not_before=lease_until)
    )


async def release(session: AsyncSession, command_id: int, not_before: datetime) -> None:
    """Give a taken command back (its run broke before an outcome was recorded): due again at
    ``not_before``."""
    await session.execute(
        update(_queue).where(_queue.c.command_id == command_id).values(in_flight=False, not_before=not_before)
    )
