"""The SQL of ``mdm.bench.push_dispatch``: its prepared population of pushable devices, the
PostgreSQL backends it charges CPU to, and the count of wake-ups still owed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String as SqlString
from sqlalchemy import Table, cast, func, insert, select, text

from mdm.bench.push import BenchError
from mdm.db.engine import Database
from mdm.db.models import Command, CommandQueueEntry, Device, Protocol
from mdm.push.tables import PushWakeup

_d: Table = Device.__table__  # type: ignore[assignment]
_c: Table = Command.__table__  # type: ignore[assignment]
_q: Table = CommandQueueEntry.__table__  # type: ignore[assignment]
_w: Table = PushWakeup.__table__  # type: ignore[assignment]
PREPARE_CHUNK = 5000


async def backend_pids(db: Database) -> list[int]:
    if db.is_sqlite:
        return []
    async with db.session() as session:
        rows = await session.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        return [int(pid) for pid in rows]


async def prepare(db: Database, devices: int, commands: bool, say: Any) -> None:
    """N pushable iOS devices (and one queued command each with ``commands``), by Core inserts;
    an existing population of the same size is reused (its wake-ups and commands cleared)."""
    async with db.transaction() as session:
        have = int(await session.scalar(select(func.count()).select_from(_d)) or 0)
        await session.execute(_w.delete())
        await session.execute(_q.delete())
        await session.execute(_c.delete())
    if have not in (0, devices):
        raise BenchError(f"the database holds {have} devices, not {devices}: use another one")
    await _analyze(db, vacuum=True)
    now = datetime.now(UTC)
    if have == 0:
        say(f"preparing {devices} devices")
        for start in range(0, devices, PREPARE_CHUNK):
            rows = [
                {"protocol": int(Protocol.IOS), "identifier": f"bench-push-{i}", "inventory": {},
                 "attributes": {}, "push_token": f"{i:064x}", "push_magic": f"magic-{i}",
                 "push_valid": True, "enrolled_at": now, "last_seen_at": now}
                for i in range(start, min(devices, start + PREPARE_CHUNK))
            ]
            async with db.transaction() as session:
                await session.execute(insert(_d), rows)
    if commands:
        say("queuing one command per device")
        async with db.transaction() as session:
            guid = func.concat("bench-", cast(_d.c.id, SqlString)) if not db.is_sqlite else (
                "bench-" + cast(_d.c.id, SqlString))
            await session.execute(insert(_c).from_select(
                ["guid", "device_id", "type", "args", "payload", "flags", "priority", "status",
                 "created_at", "updated_at", "attempts", "active"],
                select(guid, _d.c.id, text("'Block'"), text("'{}'"), text("'{}'"), text("0"), text("0"),
                       text("'processing'"), _d.c.enrolled_at, _d.c.enrolled_at, text("0"), text("true"))
                .where(_d.c.identifier.like("bench-push-%")),
            ))
        await _analyze(db)  # (the queue's foreign-key checks are planned from these statistics)
        async with db.transaction() as session:
            await session.execute(insert(_q).from_select(
                ["command_id", "device_id", "priority", "created_at", "in_flight", "not_now_count"],
                select(_c.c.id, _c.c.device_id, text("0"), _c.c.created_at, text("false"), text("0")),
            ))
    await _analyze(db)


async def _analyze(db: Database, vacuum: bool = False) -> None:
    """PostgreSQL: fresh statistics (and no dead rows of the previous run with ``vacuum``) for
    the tables the bench fills; this machine's PostgreSQL runs without autovacuum, and a
    statement planned on "empty" statistics scans (a foreign-key check per row: minutes)."""
    if db.is_sqlite:
        return
    async with db.engine.connect() as connection:
        auto = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("devices", "commands", "command_queue", "push_wakeups"):
            await auto.execute(text(f"{'VACUUM ' if vacuum else ''}ANALYZE {table}"))


async def device_ids(db: Database) -> list[int]:
    """The prepared devices' ids, in order."""
    async with db.session() as session:
        return list(await session.scalars(
            select(_d.c.id).where(_d.c.identifier.like("bench-push-%")).order_by(_d.c.id)))


async def owed_count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(_w)) or 0)
