"""Every SQL statement of EAS discovery on mailboxes, policies, owners and the run's row
(``store_devices`` has the devices and partnerships). Writes are Core INSERT .. ON CONFLICT for
both engines, one statement per chunk of rows; reads of "what we knew" are by key, per chunk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Event, User
from mdm.eas.tables import EasDiscovery, EasMailbox, EasPartnership, EasPolicy

ROW_ID = 1


def insert_for(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def table_of(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


async def execute_many(session: AsyncSession, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """One Core statement for many rows (executemany / insertmanyvalues: compiled once, not a
    VALUES clause of every row), after what the session still holds."""
    if not rows:
        return
    if session.new or session.dirty or session.deleted:
        await session.flush()
    conn = await session.connection()
    await conn.execute(stmt, [dict(r) for r in rows])


async def insert_events(session: AsyncSession, values: Sequence[Mapping[str, Any]]) -> None:
    """Outbox rows built by ``events.event_values`` (declared, checked), in one statement, after
    whatever the session still holds (so the outbox keeps the order they were emitted in)."""
    await execute_many(session, insert(table_of(Event)), values)


# ---- the run's row --------------------------------------------------------------------------
async def discovery_row(session: AsyncSession) -> EasDiscovery | None:
    return await session.get(EasDiscovery, ROW_ID, populate_existing=True)


async def _ensure_row(session: AsyncSession) -> None:
    await session.execute(
        insert_for(session)(EasDiscovery)
        .values(
            id=ROW_ID,
            mailboxes=0,
            devices=0,
            policies=0,
            vanished=0,
            failed_mailboxes=0,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )


async def request(session: AsyncSession, *, by: str, now: datetime) -> None:
    """Ask for a run (kept if one is already asked for: the earliest request stands)."""
    await _ensure_row(session)
    await session.execute(
        update(EasDiscovery)
        .where(EasDiscovery.id == ROW_ID)
        .values(requested_at=func.coalesce(EasDiscovery.requested_at, now), requested_by=by)
    )


async def begin(session: AsyncSession, *, runner: str, now: datetime) -> None:
    """A run starts: counts reset, the request it answers cleared."""
    await _ensure_row(session)
    await session.execute(
        update(EasDiscovery)
        .where(EasDiscovery.id == ROW_ID)
        .values(
            started_at=now,
            finished_at=None,
            outcome=None,
            error=None,
            runner=runner,
            requested_at=None,
            requested_by=None,
            mailboxes=0,
            devices=0,
            policies=0,
            vanished=0,
            failed_mailboxes=0,
        )
    )


async def progress(session: AsyncSession, **counts: int) -> None:
    await session.execute(update(EasDiscovery).where(EasDiscovery.id == ROW_ID).values(**counts))


async def finish(
    session: AsyncSession, *, outcome: str, error: str | None, now: datetime, **counts: int
) -> None:
    await session.execute(
        update(EasDiscovery)
        .where(EasDiscovery.id == ROW_ID)
        .values(outcome=outcome, error=error, finished_at=now, **counts)
    )


# ---- policies (tens of rows) ----------------------------------------------------------------
async def policies(session: AsyncSession) -> dict[str, EasPolicy]:
    rows = (await session.scalars(select(EasPolicy))).all()
    return {p.name.lower(): p for p in rows}


def add_policy(session: AsyncSession, **values: Any) -> None:
    session.add(EasPolicy(**values))


async def vanish_policies(session: AsyncSession, *, before: datetime, now: datetime) -> list[EasPolicy]:
    rows = list(
        (
            await session.scalars(
                select(EasPolicy).where(EasPolicy.seen_at < before, EasPolicy.vanished_at.is_(None))
            )
        ).all()
    )
    for row in rows:
        row.vanished_at = now
    return rows


# ---- owners ---------------------------------------------------------------------------------
async def ensure_users(
    session: AsyncSession, owners: Mapping[str, tuple[str | None, str | None]]
) -> dict[str, int]:
    """One ``users`` row per owner name (email, display name given on creation): name -> id."""
    if not owners:
        return {}
    # One compiled statement for the rows (a VALUES clause of every row was compiled anew per
    # chunk: 14 ms a call, the bulk of a small chunk's write transaction).
    await execute_many(
        session,
        insert_for(session)(table_of(User)).on_conflict_do_nothing(index_elements=["name"]),
        [
            {"name": name, "email": email, "display_name": display}
            for name, (email, display) in owners.items()
        ],
    )
    rows = await session.execute(select(User.name, User.id).where(User.name.in_(list(owners))))
    return {name: uid for name, uid in rows}


# ---- mailboxes ------------------------------------------------------------------------------
_MBX = (
    EasMailbox.id,
    EasMailbox.identity,
    EasMailbox.activesync_enabled,
    EasMailbox.policy,
    EasMailbox.user_id,
    EasMailbox.vanished_at,
)


async def mailboxes_by_identity(session: AsyncSession, identities: Sequence[str]) -> dict[str, Any]:
    rows = await session.execute(select(*_MBX).where(EasMailbox.identity.in_(list(identities))))
    return {r.identity: r for r in rows}


async def upsert_mailboxes(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Insert or refresh mailboxes (by identity): identity -> id."""
    if not rows:
        return {}
    stmt = insert_for(session)(table_of(EasMailbox))
    keep = (
        "guid",
        "name",
        "display_name",
        "primary_smtp",
        "sam_account_name",
        "user_id",
        "activesync_enabled",
        "policy",
        "has_partnership",
        "seen_at",
        "vanished_at",
        "updated_at",
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["identity"], set_={k: getattr(stmt.excluded, k) for k in keep}
    )
    await execute_many(session, stmt, rows)
    ids = await session.execute(
        select(EasMailbox.identity, EasMailbox.id).where(
            EasMailbox.identity.in_([r["identity"] for r in rows])
        )
    )
    return {identity: mid for identity, mid in ids}


async def vanish_mailboxes(
    session: AsyncSession, *, before: datetime, now: datetime, limit: int
) -> list[Any]:
    """Mark up to ``limit`` mailboxes not seen since ``before`` vanished: their rows."""
    rows = (
        await session.execute(
            select(*_MBX)
            .where(EasMailbox.seen_at < before, EasMailbox.vanished_at.is_(None))
            .order_by(EasMailbox.id)
            .limit(limit)
        )
    ).all()
    if rows:
        await session.execute(
            update(EasMailbox)
            .where(EasMailbox.id.in_([r.id for r in rows]))
            .values(vanished_at=now, has_partnership=False)
        )
    return list(rows)


# ---- reads for the API ----------------------------------------------------------------------
async def mailbox_page(
    session: AsyncSession, *, limit: int, after: int | None, query: str | None
) -> list[EasMailbox]:
    stmt = select(EasMailbox).order_by(EasMailbox.id).limit(limit)
    if after is not None:
        stmt = stmt.where(EasMailbox.id > after)
    if query:
        escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        stmt = stmt.where(
            or_(
                *(
                    func.lower(col).like(like, escape="\\")
                    for col in (
                        EasMailbox.identity,
                        EasMailbox.name,
                        EasMailbox.display_name,
                        EasMailbox.primary_smtp,
                    )
                )
            )
        )
    return list((await session.scalars(stmt)).all())


async def mailbox(session: AsyncSession, mailbox_id: int) -> EasMailbox | None:
    return await session.get(EasMailbox, mailbox_id)


async def partnerships_of_mailbox(session: AsyncSession, mailbox_id: int) -> list[EasPartnership]:
    return list(
        (
            await session.scalars(
                select(EasPartnership)
                .where(EasPartnership.mailbox_id == mailbox_id)
                .order_by(EasPartnership.device_id)
            )
        ).all()
    )
