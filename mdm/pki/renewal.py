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
from typing import Protocol as TypingProtocol

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Protocol
from mdm.pki.renewal_service import NOTICE_DAYS, RenewalReport, RenewalSweep, RenewerLookup
from mdm.pki.renewers import RenewalUnavailable, Renewer, protocol_value
from mdm.pki.services import RENEWERS
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.context import ServerContext

log = logging.getLogger(__name__)

__all__ = ["NOTICE_DAYS", "RenewalReport", "RenewalUnavailable", "renewal_pass", "renewal_worker"]


# ---- TRANSITIONAL (issue 10): the module-global registry, until mdm.ios registers into
# ctx.services[RENEWERS]; consulted only for protocols that have no renewer there.
class ContextRenewer(TypingProtocol):
    async def request_renewal(
        self, ctx: ServerContext, session: AsyncSession, device: Device, certificate: IssuedCertificateRecord
    ) -> str: ...


_RENEWERS: dict[int, ContextRenewer] = {}


def register_renewer(protocol: Protocol | int | str, renewer: ContextRenewer) -> None:
    """Transitional: use ``ctx.services[RENEWERS].register`` at start-up instead."""
    _RENEWERS[protocol_value(protocol)] = renewer


class _WithContext:
    def __init__(self, renewer: ContextRenewer, ctx: ServerContext) -> None:
        self.renewer = renewer
        self.ctx = ctx

    async def request_renewal(
        self, session: AsyncSession, device: Device, certificate: IssuedCertificateRecord
    ) -> str:
        return await self.renewer.request_renewal(self.ctx, session, device, certificate)


def _lookup(ctx: ServerContext) -> RenewerLookup:
    registered = ctx.services.get(RENEWERS)

    def renewer_for(protocol: int) -> Renewer | None:
        renewer = registered.get(protocol) if registered is not None else None
        if renewer is None and protocol in _RENEWERS:
            return _WithContext(_RENEWERS[protocol], ctx)
        return renewer

    return renewer_for
# ---- end of TRANSITIONAL


async def renewal_pass(ctx: ServerContext, now: datetime | None = None) -> RenewalReport:
    """One sweep (``pki.renewal_retry_hours`` read from the current configuration)."""
    sweep = RenewalSweep(ctx.db, _lookup(ctx))
    return await sweep.run(now or datetime.now(UTC), timedelta(hours=ctx.config.pki.renewal_retry_hours))


async def renewal_worker(ctx: ServerContext) -> None:
    while True:
        try:
            await renewal_pass(ctx)
        except Exception:
            log.exception("renewal pass failed")
        await asyncio.sleep(ctx.config.pki.renewal_check_seconds)
