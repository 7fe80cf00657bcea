"""Every SQL statement of ``mdm bench fleet``'s preparation: the rows a real Authenticate +
TokenUpdate write for an iOS device (``devices``, ``ios_devices``) and the issued-certificate
record of its identity (``certificates``), a batch per call as Core executemany statements, and
the look-ups the benchmark needs before the server runs (how far a data directory is prepared,
the identities of the devices the simulator drives)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mdm.db.models import Device, Group, Protocol
from mdm.ios.tables import IosDevice
from mdm.pki.tables import IssuedCertificateRecord

_d = cast(Table, Device.__table__)
_i = cast(Table, IosDevice.__table__)
_c = cast(Table, IssuedCertificateRecord.__table__)
_g = cast(Table, Group.__table__)


IOS = Protocol.IOS.value


def _in_range(first: str, last: str, protocol: int) -> Any:
    """Devices of ``protocol`` whose identifier lies in [first, last] (the unique (protocol,
    identifier) index)."""
    return (_d.c.protocol == protocol) & (_d.c.identifier >= first) & (_d.c.identifier <= last)


async def count_in_range(session: AsyncSession, first: str, last: str, protocol: int = IOS) -> int:
    where = _in_range(first, last, protocol)
    return int(await session.scalar(select(func.count()).select_from(_d).where(where)) or 0)


async def group_id(session: AsyncSession, name: str) -> int | None:
    found = await session.scalar(select(_g.c.id).where(_g.c.name == name, _g.c.parent_id.is_(None)))
    return None if found is None else int(found)


async def add_group(session: AsyncSession, name: str) -> int:
    result = await session.execute(insert(_g).values(name=name, parent_id=None).returning(_g.c.id))
    return int(result.scalar_one())


async def insert_devices(
    session: AsyncSession, rows: Sequence[dict[str, Any]], protocol: int = IOS
) -> dict[str, int]:
    """Insert ``devices`` rows (one executemany); their ids by identifier, read back with one
    range query on the unique index (the batch is a contiguous run of identifiers)."""
    await session.execute(insert(_d), list(rows))
    identifiers = [r["identifier"] for r in rows]
    found = await session.execute(
        select(_d.c.id, _d.c.identifier).where(_in_range(min(identifiers), max(identifiers), protocol))
    )
    return {r.identifier: int(r.id) for r in found}


async def insert_ios_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(_i), list(rows))


async def insert_certificates(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(_c), list(rows))


class Driven(NamedTuple):
    """What the simulator needs of a prepared device it drives."""

    device_id: int
    identifier: str
    pem: str


async def driven(
    session: AsyncSession, first: str, last: str, limit: int, protocol: int = IOS
) -> list[Driven]:
    """The first ``limit`` devices of the range, by identifier, with their identity certificate."""
    rows = await session.execute(
        select(_d.c.id, _d.c.identifier, _c.c.pem)
        .join(_c, _c.c.serial == _d.c.cert_serial)
        .where(_in_range(first, last, protocol))
        .order_by(_d.c.identifier)
        .limit(limit)
    )
    return [Driven(int(r.id), r.identifier, r.pem) for r in rows]


async def autovacuum_off(session: AsyncSession) -> bool:
    """PostgreSQL without autovacuum: nothing refreshes the planner's statistics after a bulk
    load (a test instance); always False on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    return str(await session.scalar(text("SHOW autovacuum"))) == "off"


async def settings(session: AsyncSession) -> dict[str, str]:
    """PostgreSQL's settings a fleet run's figures depend on (empty on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return {}
    row = (await session.execute(text(
        "SELECT current_setting('shared_buffers'), current_setting('max_wal_size'),"
        " current_setting('autovacuum')"
    ))).one()
    return dict(zip(("shared_buffers", "max_wal_size", "autovacuum"), map(str, row), strict=True))


async def analyze(session: AsyncSession, tables: Sequence[str]) -> None:
    """``ANALYZE`` these tables (PostgreSQL), as autovacuum would after a bulk load."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for name in tables:
        await session.execute(text(f'ANALYZE "{name}"'))


async def vacuum(conn: AsyncConnection, tables: Sequence[str]) -> None:
    """``VACUUM (ANALYZE)`` these tables (PostgreSQL; ``conn`` in autocommit: VACUUM cannot run
    in a transaction): the dead row versions an earlier run left (its recall, its delivered
    queue rows, the device rows its foreign keys locked) go, and the visibility map lets the
    next run read ``devices`` by its index alone."""
    if conn.dialect.name != "postgresql":
        return
    for name in tables:
        await conn.execute(text(f'VACUUM (ANALYZE) "{name}"'))


async def checkpoint(conn: AsyncConnection) -> bool:
    """``CHECKPOINT`` (PostgreSQL; superuser or ``pg_checkpoint``), so that a run does not pay for
    writing out what the preparation (gigabytes of WAL for 10^6 devices) or the vacuum left
    dirty: every run starts with nothing to write back. False: not allowed, or not PostgreSQL."""
    if conn.dialect.name != "postgresql":
        return False
    try:
        await conn.execute(text("CHECKPOINT"))
    except DBAPIError:
        return False
    return True
