"""The ``push`` light, from what ``GET /api/v1/push/status`` shows (the dispatcher's counters of
this process and the APNs certificate's state) and the earliest owed wake-up:

- grey: neither APNs (a push certificate) nor FCM (a service account) is configured;
- red: the APNs certificate has expired, or a service refused the credentials (its circuit is
  open: nothing is pushed until they are replaced);
- yellow: the APNs certificate expires within 30 days; or at least ``min_attempts`` (20) pushes
  were tried since start and ``failure_ratio`` (20 %) or more of them failed; or a wake-up has
  been owed for longer than ``owed_after`` (15 minutes) without being sent;
- light blue: the development push identity of ``mdm init`` (it cannot wake real devices);
- green otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.status import AreaStatus, Light
from mdm.db.models import utcnow
from mdm.push import store_status as store
from mdm.push.dispatcher import PushDispatcher

CertificateStatus = Callable[[], Awaitable[dict[str, Any] | None]]


class PushSource:
    area = "push"

    def __init__(
        self,
        dispatcher: PushDispatcher,
        certificate: Callable[[], CertificateStatus | None],
        *,
        yellow_days: int = 30,
        min_attempts: int = 20,
        failure_ratio: float = 0.2,
        owed_after: timedelta = timedelta(minutes=15),
    ) -> None:
        self.dispatcher = dispatcher
        self.certificate = certificate
        self.yellow_days = yellow_days
        self.min_attempts = min_attempts
        self.failure_ratio = failure_ratio
        self.owed_after = owed_after

    async def status(self, session: AsyncSession) -> AreaStatus:
        read = self.certificate()
        cert = (await read()) if read is not None else None
        cert = cert if cert and cert.get("configured") else None
        stats = self.dispatcher.stats
        configured = [name for name, s in stats.items() if s.configured]
        details: dict[str, Any] = {
            "services": {name: {"configured": s.configured, "circuit_open": s.circuit_open, "sent": s.sent,
                                "failed": sum(s.failures.values())} for name, s in stats.items()},
            "certificate": cert,
        }
        if not configured and cert is None:
            return AreaStatus(self.area, Light.GREY, "neither APNs (push certificate) nor FCM (service "
                              "account) is configured: devices are only reached when they poll", details)
        now = utcnow()
        due = await store.earliest_due(session)
        owed_for = now - due if due is not None else timedelta(0)
        details["oldest_owed_seconds"] = max(0, int(owed_for.total_seconds()))
        red: list[str] = []
        yellow: list[str] = []
        if cert is not None and cert.get("expired"):
            red.append(f"the APNs push certificate expired on {str(cert.get('not_after'))[:10]}: iOS "
                       "devices cannot be woken (renew it with `mdm push apns set-cert`)")
        for name, s in stats.items():
            if s.circuit_open:
                red.append(f"{name.upper()} refused the credentials: nothing is pushed until they are "
                           "replaced")
            attempts = s.sent + sum(s.failures.values())
            failed = attempts - s.sent
            if attempts >= self.min_attempts and failed >= self.failure_ratio * attempts:
                yellow.append(f"{failed} of {attempts} {name.upper()} pushes failed since start "
                              f"({', '.join(sorted(s.failures))})")
        if cert is not None and not cert.get("expired") and cert.get("days_left", 0) < self.yellow_days:
            yellow.append(f"the APNs push certificate expires in {cert.get('days_left')} days "
                          f"({str(cert.get('not_after'))[:10]})")
        if owed_for > self.owed_after:
            yellow.append(f"a wake-up has been owed for {int(owed_for.total_seconds() // 60)} minutes "
                          "without being sent")
        if red:
            return AreaStatus(self.area, Light.RED, "; ".join(red + yellow), details)
        if yellow:
            return AreaStatus(self.area, Light.YELLOW, "; ".join(yellow), details)
        if cert is not None and cert.get("development"):
            return AreaStatus(self.area, Light.LIGHT_BLUE, "the development push identity of `mdm init` "
                              "cannot wake real iOS devices; install Apple's MDM push certificate", details)
        return AreaStatus(self.area, Light.GREEN, None, details)
