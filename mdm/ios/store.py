"""Every SQL statement of the iOS feature, as named functions.

The hot path keeps its shape: the binding look-up and the Idle poll's first look are one
statement each on a bare connection (no transaction); the statements are built once at import.
Everything else takes the caller's ``AsyncSession`` (one transaction per request).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import JSON, Table, Text, Update, bindparam, delete, func, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mdm.core.identity import BoundDevice
from mdm.core.store_queue_order import next_queued
from mdm.db import point_read
from mdm.db.models import Command, CommandQueueEntry, Device, Protocol, User, utcnow
from mdm.db.prepared import Prepared
from mdm.ios.tables import IosDevice, IosPushRequest
from mdm.pki.tables import IssuedCertificateRecord

_device_table = cast(Table, Device.__table__)
_devices = _device_table.c
_ios = IosDevice.__table__.c
_q = CommandQueueEntry.__table__.c
_c = Command.__table__.c

# ---- bindings (hot path) ----------------------------------------------------------------------
BINDING_STMT = (
    select(_devices.id, _devices.identifier, _devices.status)
    .select_from(IosDevice.__table__.join(Device.__table__, _devices.id == _ios.device_id))
    .where(_ios.cert_fingerprint == bindparam("fp"))
)


async def bound_device(engine: AsyncEngine, fingerprint: bytes) -> BoundDevice | None:
    """The device a certificate fingerprint is bound to (one statement, no transaction; on
    SQLite on the loop's thread: a cold poll's look-up, cheaper than a thread hand-off)."""
    row = await point_read.first(engine, BINDING_STMT, {"fp": fingerprint})
    return None if row is None else BoundDevice(row.id, row.identifier, row.status)


class BindingSource:
    """``core.identity.BindingSource`` over ``ios_devices``."""

    __slots__ = ("engine",)

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self, fingerprint: bytes) -> BoundDevice | None:
        return await bound_device(self.engine, fingerprint)


# ---- devices ------------------------------------------------------------------------------------
async def device(session: AsyncSession, device_id: int, *, lock: bool = False) -> Device | None:
    return await session.get(Device, device_id, with_for_update=lock or None)


async def ios_device(session: AsyncSession, device_id: int, *, lock: bool = False) -> IosDevice | None:
    return await session.get(IosDevice, device_id, with_for_update=lock or None)


async def device_by_identifier(
    session: AsyncSession, identifier: str, *, lock: bool = False
) -> Device | None:
    """The iOS device with this UDID (EnrollmentID for a user enrollment)."""
    stmt = select(Device).where(Device.protocol == Protocol.IOS.value, Device.identifier == identifier)
    return await session.scalar(stmt.with_for_update() if lock else stmt)


async def device_id_by_identifier(session: AsyncSession, identifier: str) -> int | None:
    found: int | None = await session.scalar(
        select(Device.id).where(Device.protocol == Protocol.IOS.value, Device.identifier == identifier)
    )
    return found


async def device_bound_to(session: AsyncSession, fingerprint: bytes) -> int | None:
    """The id of the device this fingerprint is bound to, in the caller's transaction."""
    found: int | None = await session.scalar(
        select(IosDevice.device_id).where(IosDevice.cert_fingerprint == fingerprint)
    )
    return found


async def add_device(session: AsyncSession, row: Device) -> Device:
    """Insert a new device (flushed: its id is known on return)."""
    session.add(row)
    await session.flush()
    return row


def add_ios_device(session: AsyncSession, row: IosDevice) -> None:
    session.add(row)


async def unbind(session: AsyncSession, ios: IosDevice) -> None:
    """The enrollment ended (CheckOut): its pending re-push requests and its binding row go."""
    await session.execute(delete(IosPushRequest).where(IosPushRequest.device_id == ios.device_id))
    await session.delete(ios)


async def user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


# ---- inventory (command answers) ---------------------------------------------------------------
# Prebuilt per column set: a statement built per call costs more than running it.
# ``Prepared``: run on the session's DB-API connection (``mdm.db.prepared``).
_LOCKED_COLUMNS: dict[tuple[str, ...], Prepared] = {}
_INVENTORY_UPDATES: dict[tuple[bool, tuple[str, ...]], Prepared] = {}


async def lock_device_columns(
    session: AsyncSession, device_id: int, columns: tuple[str, ...]
) -> dict[str, Any] | None:
    """These columns of the device, row-locked (PostgreSQL) for the rest of the transaction."""
    stmt = _LOCKED_COLUMNS.get(columns)
    if stmt is None:
        stmt = _LOCKED_COLUMNS[columns] = Prepared(
            select(*(_devices[c] for c in columns)).where(_devices.id == bindparam("b_id")).with_for_update()
        )
    rows = await stmt.mappings(session, {"b_id": device_id})
    return rows[0] if rows else None


def _inventory_update(postgres: bool, columns: tuple[str, ...]) -> Update:
    # The part is set inside the stored document by the database: the other parts (app and
    # profile lists can be large) are neither read nor written back.
    if postgres:
        entry = sql_cast(bindparam("b_entry", type_=Text), JSONB)
        part = func.jsonb_build_object(bindparam("b_part", type_=Text), entry)
        merged: Any = sql_cast(sql_cast(_devices.inventory, JSONB).op("||")(part), JSON)
    else:
        path, document = bindparam("b_path", type_=Text), func.json(bindparam("b_entry", type_=Text))
        merged = func.json_set(_devices.inventory, path, document)
    values: dict[str, Any] = {c: bindparam(f"b_{c}", type_=_devices[c].type) for c in columns}
    values["inventory"] = merged
    return update(_device_table).where(_devices.id == bindparam("b_id")).values(values)


async def write_inventory(
    session: AsyncSession, device_id: int, part: str, entry: dict[str, Any], changes: dict[str, Any]
) -> None:
    """One UPDATE: ``inventory[part] = entry`` and the changed device columns."""
    postgres = session.get_bind().dialect.name == "postgresql"
    columns = tuple(sorted(changes))
    stmt = _INVENTORY_UPDATES.get((postgres, columns))
    if stmt is None:
        stmt = _INVENTORY_UPDATES[(postgres, columns)] = Prepared(_inventory_update(postgres, columns))
    params: dict[str, Any] = {f"b_{c}": v for c, v in changes.items()}
    params.update(b_id=device_id, b_entry=json.dumps(entry), b_part=part, b_path=f"$.{part}")
    await stmt.execute(session, params)


# ---- certificates -------------------------------------------------------------------------------
async def issued_certificate(session: AsyncSession, serial: str) -> IssuedCertificateRecord | None:
    record: IssuedCertificateRecord | None = await session.scalar(
        select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == serial)
    )
    return record


class CertificateState(NamedTuple):
    status: str
    not_after: datetime


async def certificate_state(session: AsyncSession, serial: str) -> CertificateState | None:
    row = (
        await session.execute(
            select(IssuedCertificateRecord.status, IssuedCertificateRecord.not_after).where(
                IssuedCertificateRecord.serial == serial
            )
        )
    ).first()
    return None if row is None else CertificateState(row.status, row.not_after)


# ---- commands -----------------------------------------------------------------------------------
_NEXT = next_queued(bindparam("device_id"))
# Idle starts a new exchange: everything queued is eligible, in order.
NEXT_ANY = _NEXT
# Later in an exchange: commands deferred by NotNow wait for the next Idle (or their back-off).
NEXT_READY = _NEXT.where(or_(_q.not_before.is_(None), _q.not_before <= bindparam("now")))


async def peek_next_command(engine: AsyncEngine, device_id: int) -> int | None:
    """The Idle poll's read-only first look (no transaction; inline on SQLite, like
    ``bound_device``): the next queued command's id."""
    row = await point_read.first(engine, NEXT_ANY, {"device_id": device_id})
    return None if row is None else int(row[0])


async def next_command(session: AsyncSession, device_id: int, *, ready_only: bool) -> int | None:
    """The next command to offer: any queued (an Idle report), or only those not deferred by a
    NotNow (``ready_only``, later in an exchange)."""
    stmt = NEXT_READY if ready_only else NEXT_ANY
    found: int | None = (await session.execute(stmt, {"device_id": device_id, "now": utcnow()})).scalar()
    return found


async def lock_queue_entry(session: AsyncSession, command_id: int) -> CommandQueueEntry | None:
    return await session.get(CommandQueueEntry, command_id, with_for_update=True)


async def active_commands(session: AsyncSession, device_id: int) -> Sequence[Command]:
    return (
        await session.scalars(
            select(Command)
            .where(Command.device_id == device_id, Command.active.is_(True))
            .order_by(Command.id)
        )
    ).all()


async def active_command_guid(session: AsyncSession, device_id: int, command_type: str) -> str | None:
    guid: str | None = await session.scalar(
        select(Command.guid).where(
            Command.device_id == device_id, Command.type == command_type, Command.active.is_(True)
        ).limit(1)
    )
    return guid


# ---- re-push requests (for the APNs pusher) -----------------------------------------------------
async def push_request(session: AsyncSession, device_id: int) -> IosPushRequest | None:
    """The device's pending request, locked."""
    return await session.get(IosPushRequest, device_id, with_for_update=True)


def add_push_request(session: AsyncSession, device_id: int, due: datetime, reason: str) -> None:
    session.add(IosPushRequest(device_id=device_id, due_at=due, reason=reason))


async def take_due_push_requests(session: AsyncSession, limit: int) -> list[IosPushRequest]:
    """Remove and return the requests that are due, oldest first (skipping rows locked by a
    concurrent taker)."""
    rows = list(
        (
            await session.scalars(
                select(IosPushRequest)
                .where(IosPushRequest.due_at <= utcnow())
                .order_by(IosPushRequest.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )
    if rows:
        await session.execute(
            delete(IosPushRequest).where(IosPushRequest.device_id.in_([r.device_id for r in rows]))
        )
    return rows

