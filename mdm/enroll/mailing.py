"""Mailing a one-time link to the address given at creation; the outcome is an event."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mdm.core import events
from mdm.db.engine import Database
from mdm.db.models import User, utcnow
from mdm.enroll import store
from mdm.enroll.config import smtp_config
from mdm.enroll.event_types import ENROLLMENT_MAIL_FAILED, ENROLLMENT_MAILED
from mdm.enroll.seams import Env
from mdm.enroll.tables import Enrollment

log = logging.getLogger("mdm.enroll")


@dataclass(frozen=True)
class MailOutcome:
    to: str
    sent: bool
    error: str | None = None


async def mail_link(
    env: Env, db: Database, enrollment: Enrollment, owner: User, url: str, qr_png: bytes | None
) -> MailOutcome:
    """Send the link; the enrollment stays valid whatever happens, and the outcome is an event."""
    from mdm.enroll.mail import LinkMail, MailError, send

    assert enrollment.email
    try:
        await send(
            smtp_config(env.config),
            LinkMail(enrollment.email, owner.name, url, enrollment.expires_at, qr_png,
                     enrollment.platform),
        )
    except MailError as exc:
        log.warning("enrollment %s: mail to %s failed: %s", enrollment.id, enrollment.email, exc)
        async with db.transaction() as session:
            events.emit(
                session, ENROLLMENT_MAIL_FAILED, user_id=owner.id,
                enrollment_id=enrollment.id, to=enrollment.email, error=str(exc),
            )
        return MailOutcome(enrollment.email, False, str(exc))
    async with db.transaction() as session:
        await store.set_mailed(session, enrollment.id, utcnow())
        events.emit(session, ENROLLMENT_MAILED, user_id=owner.id, enrollment_id=enrollment.id,
                    to=enrollment.email)
    return MailOutcome(enrollment.email, True)
