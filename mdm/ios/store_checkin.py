"""The check-in's own statements (``mdm.ios.checkin*``): statements built once, for the
Authenticate and TokenUpdate of a check-in storm.

Both messages are Core statements, no unit of work: the device and binding rows are read as
detached snapshots and only the columns that changed are written. A change of a binding (a new
fingerprint, a device status) is reported by ``binding_changed``, as the ORM's commit hook does
for its own writes (``core.identity_invalidation``). A TokenUpdate changes push fields only (no
status, no binding) and skips loading the device entity (whose inventory JSON can be large).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Insert, Table, Update, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.identity_invalidation import BINDING_KEY
from mdm.core.store_identity import NOTIFY_STMT
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


_BINDING_UPDATES: dict[tuple[str, ...], Update] = {}


async def write_binding_fields(session: AsyncSession, device_id: int, **values: Any) -> None:
    """Update columns of the device's ``ios_devices`` row (never its fingerprint: re-binding is
    ``rebind``, which reports the change)."""
    if "cert_fingerprint" in values:
        raise ValueError("the binding itself is changed by rebind")
    await _update_ios(session, device_id, values)


async def _update_ios(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    key = tuple(sorted(values))
    stmt = _BINDING_UPDATES.get(key)
    if stmt is None:
        stmt = _BINDING_UPDATES[key] = (
            update(_IOS)
            .where(_i.device_id == bindparam("b_id"))
            .values({c: bindparam(f"b_{c}") for c in key})
        )
    await session.execute(stmt, {"b_id": device_id, **{f"b_{c}": v for c, v in values.items()}})


# ---- Authenticate -------------------------------------------------------------------------------
# Built once: a check-in storm runs these for every device, and building a select per call (its
# expressions and cache key) cost about as much as executing it.
# The device columns Authenticate reads and may change (not the inventory: it can be large).
_DEVICE_COLUMNS = (
    "id", "identifier", "status", "user_id", "name", "model", "os_name", "os_version",
    "build_version", "serial_number", "imei", "phone_number", "cert_serial", "cert_not_after",
    "enrolled_at", "attributes",
)  # fmt: skip
_DEVICE_BY_IDENTIFIER = (
    select(*(_d[c] for c in _DEVICE_COLUMNS))
    .where(_d.protocol == Protocol.IOS.value, _d.identifier == bindparam("identifier"))
    .with_for_update()
)
_BINDING_COLUMNS = ("cert_fingerprint", "cert_not_before", "last_signed_at")
_DEVICE_AND_BINDING = (
    select(*(_d[c] for c in _DEVICE_COLUMNS), *(_i[c] for c in _BINDING_COLUMNS))
    .select_from(_DEVICES.join(_IOS, _i.device_id == _d.id))
    .where(_d.protocol == Protocol.IOS.value, _d.identifier == bindparam("identifier"))
    .with_for_update()
)
_BINDING_ROW = (
    select(_i.cert_fingerprint, _i.cert_not_before, _i.last_signed_at)
    .where(_i.device_id == bindparam("device_id"))
    .with_for_update()
)
_CERTIFICATES = cast(Table, IssuedCertificateRecord.__table__)
_c = _CERTIFICATES.c
# The device a fingerprint is bound to and the certificate's record, in one statement (a row
# even when neither exists).
_bound = select(
    select(_i.device_id).where(_i.cert_fingerprint == bindparam("fp")).scalar_subquery().label("bound")
).subquery("bound")
_BOUND_AND_CERTIFICATE = select(_bound.c.bound, _c.id, _c.device_id, _c.user_id).select_from(
    _bound.outerjoin(_CERTIFICATES, _c.serial == bindparam("serial"))
)
_LINK_CERTIFICATE = (
    update(_CERTIFICATES)
    .where(_c.id == bindparam("b_id"))
    .values(device_id=bindparam("b_device_id"))
)
_INSERT_DEVICE: Insert = insert(_DEVICES).returning(_d.id)
_INSERT_IOS: Insert = insert(_IOS)
_DEVICE_UPDATES: dict[tuple[str, ...], Update] = {}


class CertificateRecord(NamedTuple):
    """What Authenticate reads of the issued-certificate record of an identity."""

    id: int
    device_id: int | None
    user_id: int | None


async def device_by_identifier(session: AsyncSession, identifier: str) -> Device | None:
    """The iOS device with this UDID (EnrollmentID for a user enrollment), locked: a detached
    snapshot of the columns Authenticate reads (``device_values`` gives them back to compare)."""
    row = (await session.execute(_DEVICE_BY_IDENTIFIER, {"identifier": identifier})).first()
    return None if row is None else Device(**row._asdict())


async def device_and_binding(session: AsyncSession, identifier: str) -> tuple[Device, IosDevice] | None:
    """``device_by_identifier`` and ``binding_row`` in one statement, both rows locked; None when
    either is missing."""
    row = (await session.execute(_DEVICE_AND_BINDING, {"identifier": identifier})).first()
    if row is None:
        return None
    values = row._asdict()
    binding = {c: values.pop(c) for c in _BINDING_COLUMNS}
    return Device(**values), IosDevice(device_id=values["id"], **binding)


def device_values(device: Device) -> dict[str, Any]:
    """The columns ``device_by_identifier`` reads, as ``device`` holds them now."""
    return {c: getattr(device, c) for c in _DEVICE_COLUMNS}


async def binding_row(session: AsyncSession, device_id: int) -> IosDevice | None:
    """The device's ``ios_devices`` row, locked: a detached snapshot of what Authenticate checks."""
    row = (await session.execute(_BINDING_ROW, {"device_id": device_id})).first()
    return None if row is None else IosDevice(device_id=device_id, **row._asdict())


async def insert_device(session: AsyncSession, values: dict[str, Any]) -> int:
    """A new iOS device (one INSERT); its id."""
    device_id: int = (await session.execute(_INSERT_DEVICE, values)).scalar_one()
    return device_id


async def update_device(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    """These columns of the device (statements built once per column set)."""
    if not values:
        return
    key = tuple(sorted(values))
    stmt = _DEVICE_UPDATES.get(key)
    if stmt is None:
        stmt = _DEVICE_UPDATES[key] = (
            update(_DEVICES).where(_d.id == bindparam("b_id")).values({c: bindparam(f"b_{c}") for c in key})
        )
    await session.execute(stmt, {"b_id": device_id, **{f"b_{c}": v for c, v in values.items()}})


async def insert_binding(session: AsyncSession, values: dict[str, Any]) -> None:
    """The ``ios_devices`` row of a device bound for the first time."""
    await session.execute(_INSERT_IOS, values)


async def rebind(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    """Update the device's ``ios_devices`` row, its fingerprint included (the caller reports a
    changed binding with ``binding_changed``)."""
    await _update_ios(session, device_id, values)


async def binding_changed(session: AsyncSession, device_id: int, channel: str) -> None:
    """The device's binding changed in this transaction (re-bound, or its status): cached bindings
    of it are dropped at commit here (``core.identity_invalidation``) and, on PostgreSQL, on the
    other replicas by ``NOTIFY`` (sent at commit, dropped on rollback)."""
    session.info.setdefault(BINDING_KEY, set()).add(device_id)
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(NOTIFY_STMT, {"channel": channel, "payload": str(device_id)})


async def bound_and_certificate(
    session: AsyncSession, fingerprint: bytes, serial: str
) -> tuple[int | None, CertificateRecord | None]:
    """The id of the device this fingerprint is bound to, and the issued-certificate record of
    this serial, in the caller's transaction."""
    row = (await session.execute(_BOUND_AND_CERTIFICATE, {"fp": fingerprint, "serial": serial})).one()
    bound: int | None = row[0]
    return bound, None if row[1] is None else CertificateRecord(row[1], row[2], row[3])


async def link_certificate(session: AsyncSession, record_id: int, device_id: int) -> None:
    """The certificate is the identity of this device now."""
    await session.execute(_LINK_CERTIFICATE, {"b_id": record_id, "b_device_id": device_id})
