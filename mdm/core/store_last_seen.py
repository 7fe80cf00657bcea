"""The write-behind of ``devices.last_seen_at``: one chunk of ``(device id, when)`` per call.

PostgreSQL: one ``UPDATE … FROM unnest(ids, times)`` per chunk instead of an executemany of one
``UPDATE`` by key per row, so the backend plans and runs one statement, not 200 (each with its own
executor start-up and protocol round of Bind/Execute). SQLite keeps the executemany: it runs
inline on the event loop's thread, where one statement per row is the cheap way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, Table, bindparam, func, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device
from mdm.db.types import UtcDateTime

_devices = cast(Table, Device.__table__)
_d = _devices.c

BY_KEY = update(_devices).where(_d.id == bindparam("b_id")).values(last_seen_at=bindparam("b_at"))

_seen = func.unnest(
    bindparam("b_ids", type_=ARRAY(BigInteger)), bindparam("b_ats", type_=ARRAY(UtcDateTime()))
).table_valued("id", "at").render_derived(name="seen", with_types=False)
FROM_ARRAYS = update(_devices).where(_d.id == _seen.c.id).values(last_seen_at=_seen.c.at)


async def write(session: AsyncSession, rows: Sequence[tuple[int, datetime]]) -> None:
    """``rows``: (device id, last seen) in the order their row locks should be taken."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(FROM_ARRAYS, {"b_ids": [r[0] for r in rows], "b_ats": [r[1] for r in rows]})
    else:
        await connection.execute(BY_KEY, [{"b_id": device_id, "b_at": at} for device_id, at in rows])
