"""Every SQL statement of enrollment, as named functions on the caller's session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, User
from mdm.enroll.tables import Enrollment, EnrollmentStatus
from mdm.scep.tables import ScepChallenge, ScepTransaction


@dataclass(frozen=True)
class LinkState:
    id: int
    status: str
    expires_at: datetime
    platform: str
    identity: str


@dataclass(frozen=True)
class Expired:
    id: int
    user_id: int
    expires_at: datetime


# ---- users and devices --------------------------------------------------------------------------
async def user_named(session: AsyncSession, name: str) -> User | None:
    user: User | None = await session.scalar(select(User).where(User.name == name))
    return user


async def add_user(session: AsyncSession, name: str, email: str | None) -> User:
    user = User(name=name, email=email)
    session.add(user)
    await session.flush()
    return user


async def user_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def device_protocol(session: AsyncSession, device_id: int) -> int | None:
    protocol: int | None = await session.scalar(select(Device.protocol).where(Device.id == device_id))
    return protocol


# ---- enrollments --------------------------------------------------------------------------------
async def add_enrollment(session: AsyncSession, enrollment: Enrollment) -> None:
    session.add(enrollment)
    await session.flush()


async def enrollment_by_id(session: AsyncSession, enrollment_id: int) -> Enrollment | None:
    return await session.get(Enrollment, enrollment_id)


async def reload(session: AsyncSession, enrollment: Enrollment) -> None:
    await session.refresh(enrollment)


async def set_mailed(session: AsyncSession, enrollment_id: int, when: datetime) -> None:
    row = await session.get(Enrollment, enrollment_id)
    if row is not None:
        row.mailed_at = when


async def link_state(session: AsyncSession, token_hash: bytes) -> LinkState | None:
    found = (
        await session.execute(
            select(
                Enrollment.id, Enrollment.status, Enrollment.expires_at, Enrollment.platform,
                Enrollment.identity,
            ).where(Enrollment.token_hash == token_hash)
        )
    ).first()
    return None if found is None else LinkState(
        found.id, found.status, found.expires_at, found.platform, found.identity
    )


async def claim_link(session: AsyncSession, token_hash: bytes, now: datetime) -> int | None:
    """Atomically take the link: only one transaction can move it out of ``pending``."""
    stmt = (
        update(Enrollment)
        .where(
            Enrollment.token_hash == token_hash,
            Enrollment.status == EnrollmentStatus.PENDING.value,
            Enrollment.downloaded_at.is_(None),
            Enrollment.expires_at > now,
        )
        .values(downloaded_at=now, status=EnrollmentStatus.DOWNLOADED.value)
        .returning(Enrollment.id)
        .execution_options(synchronize_session=False)
    )
    claimed: int | None = (await session.execute(stmt)).scalar_one_or_none()
    return claimed


async def release_link(session: AsyncSession, enrollment_id: int) -> None:
    """Undo ``claim_link`` in the same transaction (the identity's CA holds its request pending:
    the link must stay usable while that request is committed)."""
    await session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id, Enrollment.status == EnrollmentStatus.DOWNLOADED.value)
        .values(downloaded_at=None, status=EnrollmentStatus.PENDING.value)
        .execution_options(synchronize_session=False)
    )


async def mark_expired(session: AsyncSession, enrollment_id: int, now: datetime) -> Expired | None:
    """Move a pending link past its expiry to ``expired``; None if it was not (any more)."""
    stmt = (
        update(Enrollment)
        .where(
            Enrollment.id == enrollment_id,
            Enrollment.status == EnrollmentStatus.PENDING.value,
            Enrollment.expires_at <= now,
        )
        .values(status=EnrollmentStatus.EXPIRED.value)
        .returning(Enrollment.id, Enrollment.user_id, Enrollment.expires_at)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).first()
    return None if row is None else Expired(row.id, row.user_id, row.expires_at)


async def due_for_expiry(session: AsyncSession, now: datetime, limit: int) -> Sequence[int]:
    return (
        await session.scalars(
            select(Enrollment.id)
            .where(Enrollment.status == EnrollmentStatus.PENDING.value, Enrollment.expires_at <= now)
            .order_by(Enrollment.id)
            .limit(limit)
        )
    ).all()


async def with_user_name(session: AsyncSession, enrollment_id: int) -> tuple[Enrollment, str] | None:
    row = (
        await session.execute(
            select(Enrollment, User.name).join(User, User.id == Enrollment.user_id).where(
                Enrollment.id == enrollment_id
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


def _status_is(status: str, now: datetime) -> ColumnElement[bool]:
    """The status as listed: a pending link past its expiry is "expired" before the expiry worker
    has marked it (the list shows it so, and filters the same way)."""
    pending, expired = EnrollmentStatus.PENDING.value, EnrollmentStatus.EXPIRED.value
    if status == pending:
        return and_(Enrollment.status == pending, Enrollment.expires_at > now)
    if status == expired:
        return or_(Enrollment.status == expired,
                   and_(Enrollment.status == pending, Enrollment.expires_at <= now))
    return Enrollment.status == status


async def page(
    session: AsyncSession, *, limit: int, after_id: int | None, user: str | None, status: str | None,
    now: datetime,
) -> list[tuple[Enrollment, str]]:
    """Up to ``limit`` enrollments with their user's name, by id after ``after_id``."""
    stmt = select(Enrollment, User.name).join(User, User.id == Enrollment.user_id).order_by(Enrollment.id)
    if after_id is not None:
        stmt = stmt.where(Enrollment.id > after_id)
    if user is not None:
        stmt = stmt.where(User.name == user)
    if status is not None:
        stmt = stmt.where(_status_is(status, now))
    return [(r[0], r[1]) for r in (await session.execute(stmt.limit(limit))).all()]


# ---- device attachment --------------------------------------------------------------------------
# Both run in every Authenticate (a check-in storm after an outage): built once, bound at
# execution, so that SQLAlchemy's compiled-statement cache is hit instead of rebuilding them.
_ENROLLMENT_BY_SERIAL = select(Enrollment).where(Enrollment.cert_serial == bindparam("b_serial"))
_SCEP_PURPOSE_OF_SERIAL = (
    select(ScepChallenge.purpose)
    .join(ScepTransaction, ScepTransaction.challenge_id == ScepChallenge.id)
    .where(ScepTransaction.cert_serial == bindparam("b_serial"))
    .limit(1)
)


async def enrollment_by_serial(session: AsyncSession, serial: str) -> Enrollment | None:
    enrollment: Enrollment | None = await session.scalar(_ENROLLMENT_BY_SERIAL, {"b_serial": serial})
    return enrollment


async def scep_purpose_of_serial(session: AsyncSession, serial: str) -> str | None:
    """The purpose of the one-time challenge the SCEP request of this certificate used."""
    purpose: str | None = await session.scalar(_SCEP_PURPOSE_OF_SERIAL, {"b_serial": serial})
    return purpose


async def latest_unbound_scep_enrollment(session: AsyncSession, user_id: int) -> Enrollment | None:
    """The user's most recent downloaded SCEP enrollment not yet bound to a device."""
    enrollment: Enrollment | None = await session.scalar(
        select(Enrollment)
        .where(
            Enrollment.user_id == user_id,
            Enrollment.identity == "scep",
            Enrollment.status == EnrollmentStatus.DOWNLOADED.value,
            Enrollment.device_id.is_(None),
        )
        .order_by(Enrollment.downloaded_at.desc())
        .limit(1)
    )
    return enrollment
