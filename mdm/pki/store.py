"""Every SQL statement of the PKI about issued certificates (and the users they are issued to),
as named functions on the caller's session. Issuance rules: ``store_rules``; the renewal
worker's sweeps: ``store_renewal``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, User
from mdm.pki.tables import CertStatus, IssuedCertificateRecord

Record = IssuedCertificateRecord


# ---- issued certificates ------------------------------------------------------------------------
async def add_record(session: AsyncSession, record: IssuedCertificateRecord) -> IssuedCertificateRecord:
    """Insert ``record`` and flush (its id is set on return)."""
    session.add(record)
    await session.flush()
    return record


async def add_records(session: AsyncSession, records: Iterable[IssuedCertificateRecord]) -> None:
    session.add_all(list(records))


async def by_serial(session: AsyncSession, serial: str) -> IssuedCertificateRecord | None:
    """The record of a normalised serial (lower-case hex, no leading zeros)."""
    stmt = select(Record).where(Record.serial == serial)
    record: IssuedCertificateRecord | None = await session.scalar(stmt)
    return record


async def known_serials(session: AsyncSession, serials: Iterable[str]) -> set[str]:
    """Which of ``serials`` are recorded."""
    return set((await session.scalars(select(Record.serial).where(Record.serial.in_(list(serials))))).all())


async def pem_of(session: AsyncSession, serial: str) -> str | None:
    pem: str | None = await session.scalar(select(Record.pem).where(Record.serial == serial))
    return pem


async def device_of(session: AsyncSession, serial: str) -> int | None:
    """The device a certificate was issued to (None: none, or no such certificate)."""
    device_id: int | None = await session.scalar(select(Record.device_id).where(Record.serial == serial))
    return device_id


async def supersede_valid(session: AsyncSession, serial: str) -> None:
    """Mark the certificate superseded if it is still valid (a replaced server certificate)."""
    await session.execute(
        update(Record)
        .where(Record.serial == serial, Record.status == CertStatus.VALID.value)
        .values(status=CertStatus.SUPERSEDED.value)
    )


async def revoked_unexpired(
    session: AsyncSession, now: datetime, source: str | None = None
) -> list[tuple[str, datetime | None, str | None, datetime]]:
    """(serial, revoked_at, reason, not_after) of revoked certificates that have not expired
    (of one certificate source when ``source`` is given)."""
    stmt = select(Record.serial, Record.revoked_at, Record.revocation_reason, Record.not_after).where(
        Record.status == CertStatus.REVOKED.value, Record.not_after > now
    )
    if source is not None:
        stmt = stmt.where(Record.source == source)
    rows = await session.execute(stmt)
    return [(r.serial, r.revoked_at, r.revocation_reason, r.not_after) for r in rows]


async def revocation_marker(session: AsyncSession, now: datetime) -> tuple[int, str | None]:
    """(count, latest revocation time) of the revoked, unexpired certificates."""
    stmt = select(func.count(Record.id), func.max(Record.revoked_at)).where(
        Record.status == CertStatus.REVOKED.value, Record.not_after > now
    )
    row = (await session.execute(stmt)).one()
    return int(row[0] or 0), (None if row[1] is None else str(row[1]))


async def pems(session: AsyncSession, serials: list[str]) -> dict[str, str]:
    rows = await session.execute(select(Record.serial, Record.pem).where(Record.serial.in_(serials)))
    return {r.serial: r.pem for r in rows}


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    before_id: int | None = None,
    user: str | None = None,
    status: str | None = None,
    cert_type: str | None = None,
    device_id: int | None = None,
) -> list[tuple[IssuedCertificateRecord, str | None]]:
    """Up to ``limit + 1`` records, newest first, with the owner's name (one more tells the caller
    there is a next page)."""
    stmt = select(Record, User.name).outerjoin(User, User.id == Record.user_id).order_by(Record.id.desc())
    if before_id is not None:
        stmt = stmt.where(Record.id < before_id)
    if user is not None:
        stmt = stmt.where(User.name == user)
    if status is not None:
        stmt = stmt.where(Record.status == status)
    if cert_type is not None:
        stmt = stmt.where(Record.type == cert_type)
    if device_id is not None:
        stmt = stmt.where(Record.device_id == device_id)
    return [(r[0], r[1]) for r in (await session.execute(stmt.limit(limit + 1))).all()]


# ---- users and devices the certificates belong to ------------------------------------------------
async def user_by_name(session: AsyncSession, name: str) -> User | None:
    user: User | None = await session.scalar(select(User).where(User.name == name))
    return user


async def user_id_by_name(session: AsyncSession, name: str) -> int | None:
    user_id: int | None = await session.scalar(select(User.id).where(User.name == name))
    return user_id


async def user_name(session: AsyncSession, user_id: int) -> str | None:
    name: str | None = await session.scalar(select(User.name).where(User.id == user_id))
    return name


async def add_user(session: AsyncSession, name: str, email: str | None) -> User:
    user = User(name=name, email=email)
    session.add(user)
    await session.flush()
    return user


async def device(session: AsyncSession, device_id: int) -> Device | None:
    return await session.get(Device, device_id)


async def count_pinned(session: AsyncSession, attribute: str, fingerprint: str) -> int:
    """Devices whose ``attributes[attribute]`` equals ``fingerprint``."""
    pin = Device.attributes[attribute].as_string()
    return int(await session.scalar(select(func.count(Device.id)).where(pin == fingerprint)) or 0)
