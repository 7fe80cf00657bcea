"""The check-in's own statements (``mdm.ios.checkin*``): statements built once, for the
Authenticate and TokenUpdate of a check-in storm.

Both messages are Core statements, no unit of work: the device and binding rows are read as
detached snapshots and only the columns that changed are written. A change of a binding (a new
fingerprint, a device status) is reported by ``binding_changed``, as the ORM's commit hook does
for its own writes (``core.identity_invalidation``). A TokenUpdate changes push fields only (no
status, no binding) and skips loading the device entity (whose inventory JSON can be large).

Every statement runs through ``mdm.db.prepared`` (compiled once, straight on the session's
DB-API cursor): through ``AsyncSession.execute`` SQLAlchemy's execution layer cost 50-60 µs
(SQLite) to ~150 µs (PostgreSQL) per statement, about as much as the rest of a storm message's
database work (issue 12, check-in storms).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Insert, Table, bindparam, insert, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.identity_invalidation import BINDING_KEY
from mdm.core.store_events import EVENT_COLUMNS, flush_pending
from mdm.core.store_identity import NOTIFY_STMT
from mdm.db.models import Device, Event, Protocol
from mdm.db.prepared import DIRECT_DRIVERS, Prepared, connection_of
from mdm.enroll.attach import Known
from mdm.enroll.store import ENROLLMENT_OF_SERIAL, attachment_of_row
from mdm.ios.tables import IosDevice
from mdm.pki.tables import IssuedCertificateRecord

_DEVICES = cast(Table, Device.__table__)
_IOS = cast(Table, IosDevice.__table__)
_d = _DEVICES.c
_i = _IOS.c


# (The session's connection, asked for once per transaction: ``mdm.db.prepared.connection_of``.)


async def _execute(session: AsyncSession, prepared: Prepared, params: dict[str, Any]) -> list[Any]:
    """``prepared`` in the session's transaction: the rows, unprocessed (``Prepared.execute``)."""
    return await prepared.run(await connection_of(session), params)


async def _mappings(
    session: AsyncSession, prepared: Prepared, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """``prepared`` in the session's transaction: the rows by column name, processed
    (``Prepared.mappings``)."""
    connection = await connection_of(session)
    if connection.dialect.driver not in DIRECT_DRIVERS:
        return await prepared.mappings(session, params)
    rows = await prepared.run(connection, params)
    return prepared.processed(connection.dialect, rows) if rows else []


class TokenState(NamedTuple):
    push_token: str | None
    push_magic: str | None
    push_valid: bool
    unlock_token: bytes | None
    awaiting_configuration: bool
    last_signed_at: datetime | None


_TOKEN_STATE = Prepared(
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


async def token_state(session: AsyncSession, device_id: int) -> TokenState | None:
    """What a TokenUpdate compares with, the device and binding rows locked; None: unbound."""
    rows = await _mappings(session, _TOKEN_STATE, {"device_id": device_id})
    return TokenState(**rows[0]) if rows else None


_BINDING_UPDATES: dict[tuple[str, ...], Prepared] = {}


async def _update_ios(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    key = tuple(sorted(values))
    stmt = _BINDING_UPDATES.get(key)
    if stmt is None:
        stmt = _BINDING_UPDATES[key] = Prepared(
            update(_IOS)
            .where(_i.device_id == bindparam("b_id"))
            .values({c: bindparam(f"b_{c}") for c in key})
        )
    await _execute(session, stmt, {"b_id": device_id, **{f"b_{c}": v for c, v in values.items()}})


# ---- Authenticate -------------------------------------------------------------------------------
# Built once: a check-in storm runs these for every device, and building a select per call (its
# expressions and cache key) cost about as much as executing it.
# The device columns Authenticate reads and may change (not the inventory: it can be large).
_DEVICE_COLUMNS = (
    "id", "identifier", "status", "user_id", "name", "model", "os_name", "os_version",
    "build_version", "serial_number", "imei", "phone_number", "cert_serial", "cert_not_after",
    "enrolled_at", "attributes",
)  # fmt: skip
_DEVICE_BY_IDENTIFIER = Prepared(
    select(*(_d[c] for c in _DEVICE_COLUMNS))
    .where(_d.protocol == Protocol.IOS.value, _d.identifier == bindparam("identifier"))
    .with_for_update()
)
_BINDING_COLUMNS = ("cert_fingerprint", "cert_not_before", "last_signed_at")
# What Authenticate decides from, by table (the guard of its single statement on PostgreSQL).
DEVICE_COLUMNS, BINDING_COLUMNS = _DEVICE_COLUMNS, _BINDING_COLUMNS
_DEVICE_AND_BINDING = Prepared(
    select(*(_d[c] for c in _DEVICE_COLUMNS), *(_i[c] for c in _BINDING_COLUMNS))
    .select_from(_DEVICES.join(_IOS, _i.device_id == _d.id))
    .where(_d.protocol == Protocol.IOS.value, _d.identifier == bindparam("identifier"))
    .with_for_update()
)
_BINDING_ROW = Prepared(
    select(_i.cert_fingerprint, _i.cert_not_before, _i.last_signed_at)
    .where(_i.device_id == bindparam("device_id"))
    .with_for_update()
)
_CERTIFICATES = cast(Table, IssuedCertificateRecord.__table__)
_c = _CERTIFICATES.c
# What Authenticate checks, in one statement (a row even when nothing exists): the device the
# fingerprint is bound to, the certificate's record, and the device of the UDID with its binding
# (both rows locked; NULLs when either is missing: then ``device_by_identifier`` and
# ``binding_row`` read them). A device checking in again needs no other read.
_bound = select(
    select(_i.device_id).where(_i.cert_fingerprint == bindparam("fp")).scalar_subquery().label("bound")
).subquery("bound")


def _checked_rows(lock: bool) -> Prepared:
    found = (
        select(*(_d[c] for c in _DEVICE_COLUMNS), *(_i[c] for c in _BINDING_COLUMNS))
        .select_from(_DEVICES.join(_IOS, _i.device_id == _d.id))
        .where(_d.protocol == Protocol.IOS.value, _d.identifier == bindparam("identifier"))
    )
    if lock:  # (PostgreSQL: FOR UPDATE may not sit on the nullable side of a join)
        found = found.with_for_update()
    cte = found.cte("found")
    return Prepared(
        select(
            _bound.c.bound,
            _c.id.label("record_id"),
            _c.device_id.label("record_device_id"),
            _c.user_id.label("record_user_id"),
            *cte.c,
            *ENROLLMENT_OF_SERIAL.c,
        ).select_from(
            _bound.outerjoin(_CERTIFICATES, _c.serial == bindparam("serial"))
            .outerjoin(cte, true())
            .outerjoin(ENROLLMENT_OF_SERIAL, true())
        )
    )


_CHECKED_ROWS = _checked_rows(lock=True)
# The same without the locks: the read of Authenticate's guarded single statement on PostgreSQL
# (``store_checkin_direct``), which locks and compares the rows when it writes.
CHECKED_ROWS_UNLOCKED = _checked_rows(lock=False)
_ENROLLMENT_KEYS = tuple(ENROLLMENT_OF_SERIAL.c.keys())
_LINK_CERTIFICATE = Prepared(
    update(_CERTIFICATES)
    .where(_c.id == bindparam("b_id"))
    .values(device_id=bindparam("b_device_id"))
)
_INSERT_EVENT = Prepared(insert(cast(Table, Event.__table__)), EVENT_COLUMNS)
_INSERT_DEVICE: Insert = insert(_DEVICES).returning(_d.id)
_INSERT_IOS: Insert = insert(_IOS)
# Inserts by the columns given (the others are left to the database's defaults).
_INSERTS: dict[tuple[Insert, tuple[str, ...]], Prepared] = {}
_DEVICE_UPDATES: dict[tuple[str, ...], Prepared] = {}


class CertificateRecord(NamedTuple):
    """What Authenticate reads of the issued-certificate record of an identity."""

    id: int
    device_id: int | None
    user_id: int | None


async def device_by_identifier(session: AsyncSession, identifier: str) -> Device | None:
    """The iOS device with this UDID (EnrollmentID for a user enrollment), locked: a detached
    snapshot of the columns Authenticate reads (``device_values`` gives them back to compare)."""
    rows = await _mappings(session, _DEVICE_BY_IDENTIFIER, {"identifier": identifier})
    return Device(**rows[0]) if rows else None


def device_values(device: Device) -> dict[str, Any]:
    """The columns ``device_by_identifier`` reads, as ``device`` holds them now."""
    return {c: getattr(device, c) for c in _DEVICE_COLUMNS}


async def binding_row(session: AsyncSession, device_id: int) -> IosDevice | None:
    """The device's ``ios_devices`` row, locked: a detached snapshot of what Authenticate checks."""
    rows = await _mappings(session, _BINDING_ROW, {"device_id": device_id})
    return IosDevice(device_id=device_id, **rows[0]) if rows else None


async def insert_device(session: AsyncSession, values: dict[str, Any]) -> int:
    """A new iOS device (one INSERT); its id."""
    values = _with_defaults(_DEVICES, values)
    rows = await _execute(session, _insert(_INSERT_DEVICE, values), values)
    return int(rows[0][0])


def _with_defaults(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` and the Python-side defaults of the columns it does not give: SQLAlchemy's
    execution applies those to a Core insert, a ``Prepared`` one does not."""
    out = dict(values)
    for column in table.columns:
        default: Any = column.default
        if default is not None and column.name not in out:
            out[column.name] = default.arg(None) if default.is_callable else default.arg
    return out


def _insert(statement: Insert, values: dict[str, Any]) -> Prepared:
    key = (statement, tuple(sorted(values)))
    prepared = _INSERTS.get(key)
    if prepared is None:
        prepared = _INSERTS[key] = Prepared(statement, key[1])
    return prepared


async def update_device(session: AsyncSession, device_id: int, values: dict[str, Any]) -> None:
    """These columns of the device (statements built once per column set)."""
    if not values:
        return
    key = tuple(sorted(values))
    stmt = _DEVICE_UPDATES.get(key)
    if stmt is None:
        stmt = _DEVICE_UPDATES[key] = Prepared(
            update(_DEVICES).where(_d.id == bindparam("b_id")).values({c: bindparam(f"b_{c}") for c in key})
        )
    await _execute(session, stmt, {"b_id": device_id, **{f"b_{c}": v for c, v in values.items()}})


async def insert_binding(session: AsyncSession, values: dict[str, Any]) -> None:
    """The ``ios_devices`` row of a device bound for the first time."""
    values = _with_defaults(_IOS, values)
    await _execute(session, _insert(_INSERT_IOS, values), values)


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


class Checked(NamedTuple):
    """What ``checked_rows`` read."""

    bound: int | None  # the device the fingerprint is bound to
    record: CertificateRecord | None  # the issued-certificate record of the serial
    device: Device | None  # the device of the UDID, when it has a binding
    binding: IosDevice | None  # and that binding
    enrollment: Known  # the enrollment of the serial, the purpose of its SCEP challenge


async def checked_rows(
    session: AsyncSession, fingerprint: bytes, serial: str, identifier: str, enrollment_serial: str
) -> Checked:
    """The id of the device this fingerprint is bound to, the issued-certificate record of this
    serial, the iOS device of this UDID with its binding (both locked), and which enrollment
    issued the identity (``mdm.enroll.store.ENROLLMENT_OF_SERIAL`` of ``enrollment_serial``), in
    one statement in the caller's transaction. ``device`` and ``binding`` are None unless both
    exist."""
    params = checked_params(fingerprint, serial, identifier, enrollment_serial)
    (values,) = await _mappings(session, _CHECKED_ROWS, params)
    return checked_of_row(values)


def checked_params(
    fingerprint: bytes, serial: str, identifier: str, enrollment_serial: str
) -> dict[str, Any]:
    return {"fp": fingerprint, "serial": serial, "identifier": identifier, "b_serial": enrollment_serial}


def checked_of_row(values: dict[str, Any]) -> Checked:
    """``Checked`` of a row of ``_CHECKED_ROWS`` or ``CHECKED_ROWS_UNLOCKED`` (as mappings)."""
    enrollment = attachment_of_row([values.pop(k) for k in _ENROLLMENT_KEYS], 0)
    record_id = values.pop("record_id")
    record = None if record_id is None else CertificateRecord(
        record_id, values.pop("record_device_id"), values.pop("record_user_id")
    )  # fmt: skip
    bound = values.pop("bound")
    if values["id"] is None:
        return Checked(bound, record, None, None, enrollment)
    binding = {c: values.pop(c) for c in _BINDING_COLUMNS}
    device = Device(**{c: values[c] for c in _DEVICE_COLUMNS})
    return Checked(bound, record, device, IosDevice(device_id=device.id, **binding), enrollment)


async def link_certificate(session: AsyncSession, record_id: int, device_id: int) -> None:
    """The certificate is the identity of this device now."""
    await _execute(session, _LINK_CERTIFICATE, {"b_id": record_id, "b_device_id": device_id})


async def insert_event(session: AsyncSession, values: dict[str, Any]) -> None:
    """An outbox row as ``mdm.core.events.event_values`` makes it, written now in the caller's
    transaction after whatever the session still holds (``events.emit_now``, on the connection
    this transaction already asked for)."""
    await flush_pending(session)
    await _execute(session, _INSERT_EVENT, values)
