"""Every SQL statement of EAS discovery on the common device list (``devices``, protocol EAS) and
the partnerships (``eas_devices``): reads of what was known, by key per chunk, and chunked
INSERT .. ON CONFLICT writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import device_status
from mdm.db.enums import DeviceStatus, Protocol
from mdm.db.models import Device
from mdm.eas.store import execute_many, insert_for, table_of
from mdm.eas.tables import EasMailbox, EasPartnership

_DEV = (
    Device.id,
    Device.identifier,
    Device.user_id,
    Device.model,
    Device.os_name,
    Device.os_version,
    Device.status,
)
_PART = (
    EasPartnership.device_id,
    EasPartnership.mailbox_id,
    EasPartnership.exchange_identity,
    EasPartnership.policy_applied,
    EasPartnership.access_state,
    EasPartnership.wipe_state,
    EasPartnership.vanished_at,
)


async def devices_by_identifier(session: AsyncSession, identifiers: Sequence[str]) -> dict[str, Any]:
    rows = await session.execute(
        select(*_DEV).where(Device.protocol == Protocol.EAS.value, Device.identifier.in_(list(identifiers)))
    )
    return {r.identifier: r for r in rows}


def _device_defaults(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "protocol": Protocol.EAS.value}


async def insert_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """New devices (protocol EAS); a row another writer added meanwhile is left as it is."""
    if rows:
        stmt = insert_for(session)(table_of(Device)).on_conflict_do_nothing(
            index_elements=["protocol", "identifier"]
        )
        await execute_many(session, stmt, [_device_defaults(r) for r in rows])


async def update_devices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Refresh known devices' inventory fields (one executemany; ``rows`` carry ``b_id``)."""
    if not rows:
        return
    keys = [k for k in rows[0] if k != "b_id"]
    stmt = update(Device).where(Device.id == bindparam("b_id")).values({k: bindparam(f"v_{k}") for k in keys})
    conn = await session.connection()
    await conn.execute(stmt, [{"b_id": r["b_id"], **{f"v_{k}": r[k] for k in keys}} for r in rows])


async def partnerships_by_identity(session: AsyncSession, identities: Sequence[str]) -> dict[str, Any]:
    rows = await session.execute(select(*_PART).where(EasPartnership.exchange_identity.in_(list(identities))))
    return {r.exchange_identity: r for r in rows}


async def upsert_partnerships(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = insert_for(session)(table_of(EasPartnership))
    keep = [k for k in rows[0] if k != "exchange_identity"]
    stmt = stmt.on_conflict_do_update(
        index_elements=["exchange_identity"], set_={k: getattr(stmt.excluded, k) for k in keep}
    )
    await execute_many(session, stmt, rows)


async def mark_wiped(session: AsyncSession, device_ids: Sequence[int], reason: str) -> None:
    """Devices whose wipe Exchange saw acknowledged: status ``wiped`` (with its event)."""
    if not device_ids:
        return
    for device in (await session.scalars(select(Device).where(Device.id.in_(list(device_ids))))).all():
        device_status.set_status(session, device, DeviceStatus.WIPED, reason)


async def vanish_partnerships(
    session: AsyncSession, *, before: datetime, now: datetime, limit: int
) -> list[Any]:
    """Mark up to ``limit`` partnerships not seen since ``before`` vanished: (device_id, identifier,
    exchange_identity, mailbox identity, last_sync)."""
    rows = (
        await session.execute(
            select(
                EasPartnership.device_id,
                EasPartnership.mailbox_id,
                Device.identifier,
                EasPartnership.exchange_identity,
                EasMailbox.identity.label("mailbox"),
                EasPartnership.last_sync,
            )
            .join(Device, Device.id == EasPartnership.device_id)
            .join(EasMailbox, EasMailbox.id == EasPartnership.mailbox_id)
            .where(EasPartnership.seen_at < before, EasPartnership.vanished_at.is_(None))
            .order_by(EasPartnership.device_id, EasPartnership.mailbox_id)
            .limit(limit)
        )
    ).all()
    if rows:
        await session.execute(
            update(EasPartnership)
            .where(EasPartnership.exchange_identity.in_([r.exchange_identity for r in rows]))
            .values(vanished_at=now)
        )
    return list(rows)


# ---- reads for the API ----------------------------------------------------------------------
async def device(session: AsyncSession, device_id: int) -> Device | None:
    return await session.get(Device, device_id)


async def partnerships_of_device(session: AsyncSession, device_id: int) -> list[tuple[EasPartnership, str]]:
    rows = await session.execute(
        select(EasPartnership, EasMailbox.identity)
        .join(EasMailbox, EasMailbox.id == EasPartnership.mailbox_id)
        .where(EasPartnership.device_id == device_id)
        .order_by(EasPartnership.mailbox_id)
    )
    return [(p, identity) for p, identity in rows]
