"""Enrollments as administrators see them: show, list (paged) and revoke an unused link."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mdm.core import events
from mdm.core.errors import Conflict, NotFound
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.enroll import store
from mdm.enroll.event_types import ENROLLMENT_REVOKED
from mdm.enroll.expiry import expire
from mdm.enroll.profiles import agent_token_purpose
from mdm.enroll.tables import Enrollment, EnrollmentStatus
from mdm.scep.challenges import withdraw


@dataclass(frozen=True)
class EnrollmentView:
    id: int
    uuid: str
    platform: str
    user: str
    email: str | None
    delivery: str
    identity: str
    status: str  # as listed: a pending link past its expiry is "expired" already
    created_at: datetime
    created_by: str | None
    expires_at: datetime
    downloaded_at: datetime | None
    revoked_at: datetime | None
    mailed_at: datetime | None
    mdm_profile_identifier: str
    cert_serial: str | None
    device_id: int | None
    for_device_id: int | None


def view_of(e: Enrollment, user: str, now: datetime | None = None) -> EnrollmentView:
    status = e.status
    if status == EnrollmentStatus.PENDING.value and e.expires_at <= (now or utcnow()):
        status = EnrollmentStatus.EXPIRED.value  # the expiry worker has not caught up yet
    return EnrollmentView(
        id=e.id, uuid=e.uuid, platform=e.platform, user=user, email=e.email, delivery=e.delivery,
        identity=e.identity, status=status, created_at=e.created_at, created_by=e.created_by,
        expires_at=e.expires_at, downloaded_at=e.downloaded_at, revoked_at=e.revoked_at,
        mailed_at=e.mailed_at, mdm_profile_identifier=e.mdm_profile_identifier, cert_serial=e.cert_serial,
        device_id=e.device_id, for_device_id=e.for_device_id,
    )


async def get(db: Database, enrollment_id: int) -> EnrollmentView:
    async with db.session() as session:
        found = await store.with_user_name(session, enrollment_id)
        if found is None:
            raise NotFound(f"no enrollment {enrollment_id}")
        return view_of(*found)


async def list_enrollments(
    db: Database, *, limit: int, after_id: int | None = None, user: str | None = None,
    status: str | None = None,
) -> tuple[list[EnrollmentView], int | None]:
    """A page of enrollments by id, and the id to continue after (None on the last page)."""
    now = utcnow()
    async with db.session() as session:
        rows = await store.page(session, limit=limit + 1, after_id=after_id, user=user, status=status,
                                now=now)
        more = len(rows) > limit
        rows = rows[:limit]
        views = [view_of(e, name) for e, name in rows]
    return views, (views[-1].id if more and views else None)


async def revoke(db: Database, enrollment_id: int, *, by: str | None = None) -> EnrollmentView:
    """Withdraw a link that has not been used. A used link cannot be revoked: remove the device.
    An Android enrollment can also be revoked after its package was served, as long as its agent's
    enrollment token is unused; revoking ends the token."""
    async with db.transaction() as session:
        found = await store.with_user_name(session, enrollment_id)
        if found is None:
            raise NotFound(f"no enrollment {enrollment_id}")
        enrollment, user_name = found
        now = utcnow()
        if enrollment.status == EnrollmentStatus.PENDING.value and enrollment.expires_at <= now:
            await expire(session, enrollment.id, now)
            await store.reload(session, enrollment)
        used = (EnrollmentStatus.DOWNLOADED.value, EnrollmentStatus.DELIVERED.value)
        token_ended = False
        if enrollment.platform == "android" and enrollment.status in (EnrollmentStatus.PENDING.value, *used):
            # Undone with the transaction if the revocation is refused below.
            token_ended = await withdraw(session, agent_token_purpose(enrollment.id)) > 0
        if enrollment.status != EnrollmentStatus.PENDING.value and not token_ended:
            raise Conflict(
                f"enrollment {enrollment_id} is {enrollment.status}, only a pending link"
                + (" or an unused enrollment token" if enrollment.platform == "android" else "")
                + " can be revoked"
                + (" (to unenroll the device, send it the Remove command)"
                   if enrollment.status in used else ""),
                enrollment_status=enrollment.status,
            )
        enrollment.status = EnrollmentStatus.REVOKED.value
        enrollment.revoked_at = now
        events.emit(session, ENROLLMENT_REVOKED, user_id=enrollment.user_id, enrollment_id=enrollment.id,
                    user=user_name, by=by, token_revoked=token_ended)
        view = view_of(enrollment, user_name, now)
    return view
