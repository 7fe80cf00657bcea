"""Every SQL statement of enrollment, as named functions on the caller's session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, User
from mdm.db.prepared import Prepared
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
# Every Authenticate (a check-in storm after an outage) asks which enrollment issued the identity:
# one statement through ``mdm.db.prepared`` (compiled once, straight on the session's DB-API
# connection) that answers both ways at once: the enrollment of a PKCS#12 identity by its serial,
# and the purpose of the one-time challenge a SCEP identity's request used. It was two ORM
# queries, ~16 % of a storm message's service-layer CPU on PostgreSQL.


@dataclass(frozen=True, slots=True)
class Attached:
    """What the check-in needs of an enrollment (``attach_device``, ``takeover``)."""

    id: int
    user_id: int
    mdm_profile_identifier: str
    device_id: int | None
    for_device_id: int | None


_ENROLLMENTS = cast(Table, Enrollment.__table__)
_e = _ENROLLMENTS.c
_ATTACHED = (_e.id, _e.user_id, _e.mdm_profile_identifier, _e.device_id, _e.for_device_id)
_scep = select(
    select(ScepChallenge.purpose)
    .join(ScepTransaction, ScepTransaction.challenge_id == ScepChallenge.id)
    .where(ScepTransaction.cert_serial == bindparam("b_serial"))
    .limit(1)
    .scalar_subquery()
    .label("purpose")
).subquery("scep")
# One row always: the SCEP purpose (or NULL) and the enrollment of that serial (or NULLs). The
# check-in's own first read (``mdm.ios.store_checkin.checked_rows``) joins it as a subquery.
ENROLLMENT_OF_SERIAL = (
    select(_scep.c.purpose, *(c.label(f"enrollment_{c.name}") for c in _ATTACHED))
    .select_from(_scep.outerjoin(_ENROLLMENTS, _e.cert_serial == bindparam("b_serial")))
    .limit(1)
    .subquery("enrollment")
)
_ENROLLMENT_OF_SERIAL = Prepared(select(*ENROLLMENT_OF_SERIAL.c))
_ATTACHED_BY_ID = Prepared(select(*_ATTACHED).where(_e.id == bindparam("b_id")))
_LATEST_UNBOUND_SCEP = Prepared(
    select(*_ATTACHED)
    .where(
        _e.user_id == bindparam("b_user_id"),
        _e.identity == "scep",
        _e.status == EnrollmentStatus.DOWNLOADED.value,
        _e.device_id.is_(None),
    )
    .order_by(_e.downloaded_at.desc())
    .limit(1)
)
_SET_DEVICE = Prepared(
    update(_ENROLLMENTS).where(_e.id == bindparam("b_id")).values(device_id=bindparam("b_device_id"))
)


def _attached(row: Any, at: int = 0) -> Attached:
    return Attached(row[at], row[at + 1], row[at + 2], row[at + 3], row[at + 4])


async def enrollment_or_purpose_of_serial(
    session: AsyncSession, serial: str
) -> tuple[Attached | None, str | None]:
    """The enrollment whose PKCS#12 identity has this serial (or None), and the purpose of the
    one-time challenge the SCEP request of this certificate used (or None)."""
    rows = await _ENROLLMENT_OF_SERIAL.execute_in(session, {"b_serial": serial})
    if not rows:  # (never: the statement always answers one row)
        return None, None
    return attachment_of_row(rows[0], 0)


def attachment_of_row(row: Any, at: int) -> tuple[Attached | None, str | None]:
    """The enrollment and SCEP purpose of ``ENROLLMENT_OF_SERIAL``'s columns in ``row`` from
    index ``at`` (its column order)."""
    return (None if row[at + 1] is None else _attached(row, at + 1)), row[at]


async def attached_by_id(session: AsyncSession, enrollment_id: int) -> Attached | None:
    rows = await _ATTACHED_BY_ID.execute_in(session, {"b_id": enrollment_id})
    return _attached(rows[0]) if rows else None


async def latest_unbound_scep_enrollment(session: AsyncSession, user_id: int) -> Attached | None:
    """The user's most recent downloaded SCEP enrollment not yet bound to a device."""
    rows = await _LATEST_UNBOUND_SCEP.execute_in(session, {"b_user_id": user_id})
    return _attached(rows[0]) if rows else None


async def set_enrollment_device(session: AsyncSession, enrollment_id: int, device_id: int) -> None:
    await _SET_DEVICE.execute_in(session, {"b_id": enrollment_id, "b_device_id": device_id})
