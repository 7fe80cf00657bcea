"""A device's next queued command, as SQL every delivery path shares.

A device's look-ups read its ``command_queue`` rows (a handful) through
``ix_command_queue_device_order`` and check each one's command by primary key. Written as a join
of ``command_queue`` and ``commands`` with ``status = 'processing'``, PostgreSQL was free to turn
it around, and did when its statistics were older than the queue (the first bulk command after
a quiet time grows ``commands`` by 10^6 rows in a minute while the statistics still say almost
nothing is processing): it walked every processing command through the bulk operations'
``(bulk_id, status)`` index and probed the queue for each, 21,000 buffers and 31 ms per look-up
at 10^6, or a scan of ``commands`` once that index was out of reach. The command's status is
therefore a correlated scalar sub-select by primary key, which neither engine flattens into a
join: the queue rows drive, whatever the statistics (``tests/test_queue_plans_stale_stats.py``).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, select

from mdm.db.models import Command, CommandQueueEntry, CommandStatus

_commands = cast(Table, Command.__table__)
_queue = cast(Table, CommandQueueEntry.__table__)


def is_processing(command_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The command ``command_id`` is still to deliver: its status by primary key."""
    status = select(_commands.c.status).where(_commands.c.id == command_id).scalar_subquery()
    return status == CommandStatus.PROCESSING.value


def next_queued(device: ColumnElement[Any]) -> Select[int]:
    """The id of ``device``'s next deliverable command: priority, then age. Callers add their
    own conditions on ``command_queue`` (a NotNow's back-off, ids to skip)."""
    q = _queue.c
    return (
        select(q.command_id)
        .where(q.device_id == device, is_processing(q.command_id))
        .order_by(q.priority.desc(), q.command_id)
        .limit(1)
    )
