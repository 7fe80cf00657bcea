"""The renewal worker: every ``pki.renewal_check_seconds`` one ``RenewalSweep``
(``mdm.pki.renewal_service``) over the process's certificates, asking the renewers registered in
``ctx.services[RENEWERS]`` (``mdm.pki.renewers``).

A platform plugs in at its start-up with
``ctx.services[mdm.pki.services.RENEWERS].register(Protocol.IOS, renewer)``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from mdm.pki.renewal_service import NOTICE_DAYS, RenewalReport, RenewalSweep
from mdm.pki.renewers import RenewalUnavailable
from mdm.pki.services import RENEWERS
from mdm.server.context import ServerContext

log = logging.getLogger(__name__)

__all__ = ["NOTICE_DAYS", "RenewalReport", "RenewalUnavailable", "renewal_pass", "renewal_worker"]


async def renewal_pass(ctx: ServerContext, now: datetime | None = None) -> RenewalReport:
    """One sweep (``pki.renewal_retry_hours`` read from the current configuration)."""
    sweep = RenewalSweep(ctx.db, ctx.services[RENEWERS].get)
    return await sweep.run(now or datetime.now(UTC), timedelta(hours=ctx.config.pki.renewal_retry_hours))


async def renewal_worker(ctx: ServerContext) -> None:
    while True:
        try:
            await renewal_pass(ctx)
        except Exception:
            log.exception("renewal pass failed")
        await asyncio.sleep(ctx.config.pki.renewal_check_seconds)
