"""The ``enrollment`` light:

- red: e-mail delivery is configured (``[smtp] host``) and the newest enrollment link that was to
  be mailed (among the ``recent`` (50) newest enrollments, created more than ``mail_grace``
  (60 s) ago) was not sent: mail delivery is failing (the ``enrollment_mail_failed`` events say
  why);
- yellow: ``expired_threshold`` (10) or more links expired unused in the last ``window`` (7
  days), and they are at least as many as the links downloaded in that time (users do not get or
  do not use their links);
- light blue: no device has ever enrolled (a new installation);
- green otherwise.

Every read is bounded: the newest enrollments by primary key, and counts up to a limit along
the (status, expires_at) index; "no device yet" is one primary-key look-up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.status import AreaStatus, Light
from mdm.core.store_status import any_device
from mdm.db.models import utcnow
from mdm.enroll import store_status as store
from mdm.enroll.tables import EnrollmentStatus

COUNT_LIMIT = 1000


class EnrollmentSource:
    area = "enrollment"

    def __init__(
        self,
        mail_configured: Callable[[], bool],
        *,
        recent: int = 50,
        mail_grace: timedelta = timedelta(seconds=60),
        expired_threshold: int = 10,
        window: timedelta = timedelta(days=7),
    ) -> None:
        self.mail_configured = mail_configured
        self.recent = recent
        self.mail_grace = mail_grace
        self.expired_threshold = expired_threshold
        self.window = window

    async def status(self, session: AsyncSession) -> AreaStatus:
        now = utcnow()
        details: dict[str, Any] = {"mail_configured": self.mail_configured()}
        if details["mail_configured"]:
            mailed = [r for r in await store.newest_mailed(session, self.recent)
                      if r.created_at <= now - self.mail_grace]
            failed = sum(1 for r in mailed if r.mailed_at is None)
            details["recent_mails"] = len(mailed)
            details["recent_mails_failed"] = failed
            if mailed and mailed[0].mailed_at is None:
                return AreaStatus(self.area, Light.RED, f"mail delivery of enrollment links is failing: "
                                  f"{failed} of the last {len(mailed)} link mails were not sent (see the "
                                  "enrollment_mail_failed events)", details)
        since = now - self.window
        expired = await store.by_status_expiring_since_upto(
            session, EnrollmentStatus.EXPIRED.value, since, COUNT_LIMIT)
        downloaded = await store.by_status_expiring_since_upto(
            session, EnrollmentStatus.DOWNLOADED.value, since, COUNT_LIMIT)
        details["expired_unused_recently"] = expired
        details["downloaded_recently"] = downloaded
        if expired >= self.expired_threshold and expired >= downloaded:
            days = int(self.window.total_seconds() // 86400)
            return AreaStatus(self.area, Light.YELLOW, f"{expired} enrollment links expired unused in the "
                              f"last {days} days ({downloaded} were used)", details)
        if not await any_device(session):
            return AreaStatus(self.area, Light.LIGHT_BLUE, "no device has enrolled yet", details)
        return AreaStatus(self.area, Light.GREEN, None, details)
