"""Every SQL statement of policies: policies and profiles, device tags, applied versions, the
revision counters, and the KES devices of a set of groups (for wake-ups, in pages)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.enums import Protocol
from mdm.db.models import Device, Group
from mdm.policies.tables import DeviceTag, Policy, PolicyDevice, PolicyProfile, PolicyState

STATE_ID = 1


def _insert(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


# ---- revision counters ----------------------------------------------------------------------------
async def bump(session: AsyncSession, *, tags: bool = False) -> int:
    """Count one more change of policies (or of device tags): the new value. Run first in a
    change's transaction: the row lock it takes orders concurrent changes (PostgreSQL; SQLite has
    one writer anyway)."""
    column = PolicyState.tags_revision if tags else PolicyState.revision
    stmt = _insert(session)(PolicyState).values(
        id=STATE_ID, revision=0 if tags else 1, tags_revision=1 if tags else 0
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"], set_={column.key: column + 1}
    ).returning(column)
    return int((await session.execute(stmt)).scalar_one())


async def state(session: AsyncSession) -> tuple[int, int]:
    """(policies revision, tags revision); (0, 0) before the first change."""
    row = (await session.execute(
        select(PolicyState.revision, PolicyState.tags_revision).where(PolicyState.id == STATE_ID)
    )).first()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


# ---- groups ---------------------------------------------------------------------------------------
async def group_links(session: AsyncSession) -> list[tuple[int, int | None]]:
    """(id, parent_id) of every group (groups are few), in id order."""
    rows = (await session.execute(select(Group.id, Group.parent_id).order_by(Group.id))).all()
    return [(int(r[0]), r[1]) for r in rows]


async def group_exists(session: AsyncSession, group_id: int) -> bool:
    return await session.get(Group, group_id) is not None


# ---- policies and profiles ------------------------------------------------------------------------
async def all_policies(session: AsyncSession) -> list[Policy]:
    return list((await session.scalars(select(Policy).order_by(Policy.id))).all())


async def all_profiles(session: AsyncSession) -> list[PolicyProfile]:
    return list((await session.scalars(select(PolicyProfile).order_by(PolicyProfile.id))).all())


async def policies(session: AsyncSession, group_id: int | None) -> list[Policy]:
    stmt = select(Policy).order_by(Policy.id)
    if group_id is not None:
        stmt = stmt.where(Policy.group_id == group_id)
    return list((await session.scalars(stmt)).all())


async def policy(session: AsyncSession, policy_id: int, *, lock: bool = False) -> Policy | None:
    """The policy; ``lock``: its row locked for the transaction (PostgreSQL; SQLite has one writer)."""
    return await session.get(Policy, policy_id, populate_existing=True, with_for_update=lock or None)


async def policy_of_group(session: AsyncSession, group_id: int) -> Policy | None:
    return (await session.scalars(select(Policy).where(Policy.group_id == group_id))).first()


async def add_policy(session: AsyncSession, **values: Any) -> Policy:
    row = Policy(**values)
    session.add(row)
    await session.flush()
    return row


async def delete_policy(session: AsyncSession, row: Policy) -> None:
    await session.execute(delete(PolicyProfile).where(PolicyProfile.policy_id == row.id))
    await session.delete(row)
    await session.flush()


async def profiles_of(session: AsyncSession, policy_ids: Sequence[int]) -> list[PolicyProfile]:
    if not policy_ids:
        return []
    stmt = select(PolicyProfile).where(PolicyProfile.policy_id.in_(list(policy_ids)))
    return list((await session.scalars(stmt.order_by(PolicyProfile.policy_id, PolicyProfile.name))).all())


async def profile(session: AsyncSession, policy_id: int, name: str) -> PolicyProfile | None:
    stmt = select(PolicyProfile).where(PolicyProfile.policy_id == policy_id, PolicyProfile.name == name)
    return (await session.scalars(stmt)).first()


async def add_profile(session: AsyncSession, **values: Any) -> PolicyProfile:
    row = PolicyProfile(**values)
    session.add(row)
    await session.flush()
    return row


async def delete_profile(session: AsyncSession, row: PolicyProfile) -> None:
    await session.delete(row)
    await session.flush()


# ---- devices --------------------------------------------------------------------------------------
async def device(session: AsyncSession, device_id: int) -> Device | None:
    return await session.get(Device, device_id)


async def device_tags(session: AsyncSession, device_id: int) -> list[str]:
    stmt = select(DeviceTag.tag).where(DeviceTag.device_id == device_id).order_by(DeviceTag.tag)
    return list((await session.scalars(stmt)).all())


async def set_device_tags(session: AsyncSession, device_id: int, tags: Sequence[str], revision: int) -> None:
    """Replace the device's tags; its ``tags_revision`` is set to ``revision``."""
    await session.execute(delete(DeviceTag).where(DeviceTag.device_id == device_id))
    if tags:
        await session.execute(insert(DeviceTag), [{"device_id": device_id, "tag": t} for t in tags])
    stmt = _insert(session)(PolicyDevice).values(device_id=device_id, tags_revision=revision)
    await session.execute(stmt.on_conflict_do_update(index_elements=["device_id"],
                                                     set_={"tags_revision": revision}))


async def tags_changed_since(session: AsyncSession, revision: int) -> list[int]:
    """The devices whose tags changed after tags revision ``revision``."""
    stmt = select(PolicyDevice.device_id).where(PolicyDevice.tags_revision > revision)
    return [int(d) for d in (await session.scalars(stmt)).all()]


async def record_applied(session: AsyncSession, device_id: int, version: str, now: datetime) -> None:
    """The version the device applied, written only when it differs from the stored one."""
    stmt = _insert(session)(PolicyDevice).values(
        device_id=device_id, applied_version=version, applied_at=now, tags_revision=0
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["device_id"],
        set_={"applied_version": stmt.excluded.applied_version, "applied_at": stmt.excluded.applied_at},
        where=PolicyDevice.applied_version.is_distinct_from(stmt.excluded.applied_version),
    )
    await session.execute(stmt)


async def applied(session: AsyncSession, device_id: int) -> tuple[str | None, datetime | None]:
    row = (await session.execute(
        select(PolicyDevice.applied_version, PolicyDevice.applied_at)
        .where(PolicyDevice.device_id == device_id)
    )).first()
    return (None, None) if row is None else (row[0], row[1])


async def kes_devices_page(
    session: AsyncSession, group_ids: Sequence[int], after_id: int, limit: int
) -> list[int]:
    """Up to ``limit`` ids of KES devices in ``group_ids`` after ``after_id`` (id order: a page
    reads the (group_id) index entries of those groups, no more)."""
    stmt = (
        select(Device.id)
        .where(Device.group_id.in_(list(group_ids)), Device.protocol == int(Protocol.KES),
               Device.id > after_id)
        .order_by(Device.id)
        .limit(limit)
    )
    return [int(i) for i in (await session.scalars(stmt)).all()]
