"""The check-in's own statements (``mdm.ios.checkin``): statements built once, for the
Authenticate and TokenUpdate of a check-in storm.

A TokenUpdate changes push fields only (no status, no binding): no cached binding depends on it,
so it needs none of the ORM's commit-time invalidation and skips loading the device entity (whose
inventory JSON can be large).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Protocol
from mdm.ios.tables import IosDevice
from mdm.pki.tables import IssuedCertificateRecord

_DEVICES = cast(Table, Device.__table__)
_IOS = cast(Table, IosDevice.__table__)
_d = _DEVICES.c
_i = _IOS.c


class TokenState(NamedTuple):
    push_token: str | None
    push_magic: str | None
    push_valid: bool
    unlock_token: bytes | None
    awaiting_configuration: bool
    last_signed_at: datetime | None


_TOKEN_STATE = (
    select(
        _d.push_token,
        _d.push_magic,
        _d.push_valid,
        _i.unlock_token,
        _i.awaiting_configuration,
        _i.last_signed_at,
    )
    .select_from(_DEVICES.join(_IOS, _i.device_id == _d.id))
    .where(_d.id == bindparam("device_id"))
    .with_for_update()
)
_PUSH_UPDATE = (
    update(_DEVICES)
    .where(_d.id == bindparam("b_id"))
    .values(push_token=bindparam("b_token"), push_magic=bindparam("b_magic"), push_valid=True)
)
_PUSH_CHANGED_UPDATE = _PUSH_UPDATE.values(push_changed_at=bindparam("b_changed_at"))


async def token_state(session: AsyncSession, device_id: int) -> TokenState | None:
    """What a TokenUpdate compares with, the device and binding rows locked; None: unbound."""
    row = (await session.execute(_TOKEN_STATE, {"device_id": device_id})).first()
    return None if row is None else TokenState(*row)


async def write_push(
    session: AsyncSession, device_id: int, token: str, magic: str, changed_at: datetime | None
) -> None:
    """The device's push token and magic, valid again (``changed_at``: the token changed)."""
    params: dict[str, Any] = {"b_id": device_id, "b_token": token, "b_magic": magic}
    if changed_at is not None:
        params["b_changed_at"] = changed_at
    await session.execute(_PUSH_CHANGED_UPDATE if changed_at is not None else _PUSH_UPDATE, params)


async def write_binding_fields(session: AsyncSession, device_id: int, **values: Any) -> None:
    """Update columns of the device's ``ios_devices`` row (never its fingerprint: re-binding goes
    through the ORM, whose commit hook drops cached bindings)."""
    if "cert_fingerprint" in values:
        raise ValueError("the binding itself is changed through the ORM")
    await session.execute(update(_IOS).where(_i.device_id == device_id).values(**values))


# ---- Authenticate -------------------------------------------------------------------------------
# Built once: a check-in storm runs these for every device, and building a select per call (its
# expressions and cache key) cost about as much as executing it.
_DEVICE_BY_IDENTIFIER = (
    select(Device)
    .where(Device.protocol == Protocol.IOS.value, Device.identifier == bindparam("identifier"))
    .with_for_update()
)
_BOUND_TO = select(_i.device_id).where(_i.cert_fingerprint == bindparam("fp"))
_c = cast(Table, IssuedCertificateRecord.__table__).c
_CERTIFICATE = select(_c.id, _c.device_id, _c.user_id).where(_c.serial == bindparam("serial"))
_LINK_CERTIFICATE = (
    update(cast(Table, IssuedCertificateRecord.__table__))
    .where(_c.id == bindparam("b_id"))
    .values(device_id=bindparam("b_device_id"))
)


class CertificateRecord(NamedTuple):
    """What Authenticate reads of the issued-certificate record of an identity."""

    id: int
    device_id: int | None
    user_id: int | None


async def device_by_identifier(session: AsyncSession, identifier: str) -> Device | None:
    """The iOS device with this UDID (EnrollmentID for a user enrollment), locked."""
    device: Device | None = await session.scalar(_DEVICE_BY_IDENTIFIER, {"identifier": identifier})
    return device


async def device_bound_to(session: AsyncSession, fingerprint: bytes) -> int | None:
    """The id of the device this fingerprint is bound to, in the caller's transaction."""
    found: int | None = (await session.execute(_BOUND_TO, {"fp": fingerprint})).scalar()
    return found


async def certificate_record(session: AsyncSession, serial: str) -> CertificateRecord | None:
    row = (await session.execute(_CERTIFICATE, {"serial": serial})).first()
    return None if row is None else CertificateRecord(*row)


async def link_certificate(session: AsyncSession, record_id: int, device_id: int) -> None:
    """The certificate is the identity of this device now."""
    await session.execute(_LINK_CERTIFICATE, {"b_id": record_id, "b_device_id": device_id})
