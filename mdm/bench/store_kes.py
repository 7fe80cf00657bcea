"""Every SQL statement of ``mdm bench kes``'s preparation: the rows a real register + certificate
leave for a KES device (``devices`` protocol 2, ``kes_devices`` with the certificate binding, the
issued-certificate record), a batch per call as Core executemany statements, and the look-ups
the benchmark needs before the server runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.bench import store_fleet
from mdm.bench.store_fleet import Driven
from mdm.db.models import Protocol, User
from mdm.kes.tables import KesDevice

_k = cast(Table, KesDevice.__table__)
_u = cast(Table, User.__table__)


async def user_id(session: AsyncSession, name: str) -> int | None:
    found = await session.scalar(select(_u.c.id).where(_u.c.name == name))
    return None if found is None else int(found)


async def add_user(session: AsyncSession, name: str, email: str) -> int:
    result = await session.execute(insert(_u).values(name=name, email=email).returning(_u.c.id))
    return int(result.scalar_one())


async def insert_kes_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(_k), list(rows))


# The rows common to every platform are written and read as the fleet preparation does.
KES = Protocol.KES.value
insert_certificates = store_fleet.insert_certificates


async def count_in_range(session: AsyncSession, first: str, last: str) -> int:
    return await store_fleet.count_in_range(session, first, last, KES)


async def insert_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Insert ``devices`` rows; their ids by identifier (the batch is contiguous)."""
    return await store_fleet.insert_devices(session, rows, KES)


async def driven(session: AsyncSession, first: str, last: str, limit: int) -> list[Driven]:
    """The first ``limit`` devices of the range, by identifier, with their certificate."""
    return await store_fleet.driven(session, first, last, limit, KES)
