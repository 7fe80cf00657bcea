"""Every SQL statement of the KES identity: the binding look-up of the hot path, devices and their
``kes_devices`` rows, enrollments, certificates and the commands an unenroll fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mdm.core.identity import BoundDevice
from mdm.db import point_read
from mdm.db.models import Command, Device, Protocol, User
from mdm.enroll.tables import Enrollment
from mdm.kes.tables import KesDevice
from mdm.pki.tables import IssuedCertificateRecord

_devices = Device.__table__.c
_kes = KesDevice.__table__.c

# ---- bindings (hot path) ----------------------------------------------------------------------
# The current certificate, or the one a renewal replaced (accepted until it expires or is revoked).
BINDING_STMT = (
    select(_devices.id, _devices.identifier, _devices.status, _devices.user_id)
    .select_from(KesDevice.__table__.join(Device.__table__, _devices.id == _kes.device_id))
    .where(or_(_kes.cert_fingerprint == bindparam("fp"), _kes.previous_fingerprint == bindparam("fp")))
    .limit(1)
)


class BoundKesDevice(NamedTuple):
    device: BoundDevice
    user_id: int | None


async def bound_device(engine: AsyncEngine, fingerprint: bytes) -> BoundKesDevice | None:
    """The device a certificate fingerprint is bound to (one statement, no transaction)."""
    row = await point_read.first(engine, BINDING_STMT, {"fp": fingerprint})
    if row is None:
        return None
    return BoundKesDevice(BoundDevice(row.id, row.identifier, row.status), row.user_id)


# ---- devices ------------------------------------------------------------------------------------
async def device_by_identifier(
    session: AsyncSession, identifier: str, *, lock: bool = False
) -> Device | None:
    """The KES device with this Android id."""
    stmt = select(Device).where(Device.protocol == Protocol.KES.value, Device.identifier == identifier)
    return await session.scalar(stmt.with_for_update() if lock else stmt)


async def other_registered(session: AsyncSession, enrollment_id: int, identifier: str) -> str | None:
    """The Android id of another device that registered with this enrollment's token, if any."""
    stmt = (
        select(Device.identifier)
        .join(KesDevice, KesDevice.device_id == Device.id)
        .where(KesDevice.enrollment_id == enrollment_id, Device.identifier != identifier)
        .limit(1)
    )
    found: str | None = await session.scalar(stmt)
    return found


async def device(session: AsyncSession, device_id: int, *, lock: bool = False) -> Device | None:
    return await session.get(Device, device_id, with_for_update=lock or None)


async def kes_device(session: AsyncSession, device_id: int, *, lock: bool = False) -> KesDevice | None:
    return await session.get(KesDevice, device_id, with_for_update=lock or None)


async def add(session: AsyncSession, *rows: Device | KesDevice) -> None:
    session.add_all(rows)
    await session.flush()


async def active_commands(session: AsyncSession, device_id: int) -> Sequence[Command]:
    return (
        await session.scalars(
            select(Command)
            .where(Command.device_id == device_id, Command.active.is_(True))
            .order_by(Command.id)
        )
    ).all()


# ---- enrollments and certificates ----------------------------------------------------------------
async def enrollment(session: AsyncSession, enrollment_id: int, *, lock: bool = False) -> Enrollment | None:
    return await session.get(Enrollment, enrollment_id, with_for_update=lock or None)


async def certificate(session: AsyncSession, serial: str) -> IssuedCertificateRecord | None:
    found: IssuedCertificateRecord | None = await session.scalar(
        select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == serial)
    )
    return found


async def user_email(session: AsyncSession, user_id: int) -> str | None:
    email: str | None = await session.scalar(select(User.email).where(User.id == user_id))
    return email
