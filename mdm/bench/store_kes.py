"""Every SQL statement of ``mdm bench kes``'s preparation: the rows a real register + certificate
leave for a KES device (``devices`` protocol 2, ``kes_devices`` with the certificate binding, the
issued-certificate record), a batch per call as Core executemany statements, and the look-ups
the benchmark needs before the server runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Protocol, User
from mdm.kes.tables import KesDevice
from mdm.pki.tables import IssuedCertificateRecord

_d = cast(Table, Device.__table__)
_k = cast(Table, KesDevice.__table__)
_c = cast(Table, IssuedCertificateRecord.__table__)
_u = cast(Table, User.__table__)


def _in_range(first: str, last: str) -> Any:
    return (_d.c.protocol == Protocol.KES.value) & (_d.c.identifier >= first) & (_d.c.identifier <= last)


async def count_in_range(session: AsyncSession, first: str, last: str) -> int:
    return int(await session.scalar(select(func.count()).select_from(_d).where(_in_range(first, last))) or 0)


async def user_id(session: AsyncSession, name: str) -> int | None:
    found = await session.scalar(select(_u.c.id).where(_u.c.name == name))
    return None if found is None else int(found)


async def add_user(session: AsyncSession, name: str, email: str) -> int:
    result = await session.execute(insert(_u).values(name=name, email=email).returning(_u.c.id))
    return int(result.scalar_one())


async def insert_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Insert ``devices`` rows; their ids by identifier (one range query: the batch is contiguous)."""
    await session.execute(insert(_d), list(rows))
    identifiers = [r["identifier"] for r in rows]
    found = await session.execute(
        select(_d.c.id, _d.c.identifier).where(_in_range(min(identifiers), max(identifiers))))
    return {r.identifier: int(r.id) for r in found}


async def insert_kes_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(_k), list(rows))


async def insert_certificates(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(_c), list(rows))


class Driven(NamedTuple):
    device_id: int
    identifier: str
    pem: str


async def driven(session: AsyncSession, first: str, last: str, limit: int) -> list[Driven]:
    """The first ``limit`` devices of the range, by identifier, with their certificate."""
    rows = await session.execute(
        select(_d.c.id, _d.c.identifier, _c.c.pem)
        .join(_c, _c.c.serial == _d.c.cert_serial)
        .where(_in_range(first, last))
        .order_by(_d.c.identifier)
        .limit(limit)
    )
    return [Driven(int(r.id), r.identifier, r.pem) for r in rows]
