"""The approval queue of SCEP (``scep.manual_approval``): list requests, approve one (its
certificate is issued; the device gets it on its next poll), reject one."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import Conflict, NotFound
from mdm.db.engine import Database
from mdm.pki import store as pki_store
from mdm.pki.sources import SourceSet
from mdm.scep import store
from mdm.scep.event_types import SCEP_REQUEST_APPROVED, SCEP_REQUEST_REJECTED
from mdm.scep.issuing import issue_request
from mdm.scep.settings import ScepConfig
from mdm.scep.tables import ScepTransaction, TransactionStatus

log = logging.getLogger("mdm.scep")


class ScepApprovals:
    def __init__(self, db: Database, sources: SourceSet, settings: ScepConfig) -> None:
        self.db = db
        self.sources = sources
        self.settings = settings  # replaced by mdm reload

    async def list_requests(self, *, status: str | None, limit: int) -> list[ScepTransaction]:
        async with self.db.session() as session:
            return await store.list_transactions(session, status=status, limit=limit)

    async def approve(self, request_id: int, *, by: str) -> ScepTransaction:
        """Issue the certificate of a pending request; the device gets it on its next poll."""
        async with self.db.transaction() as session:
            row = await _decide(session, request_id, TransactionStatus.ISSUED, by)
            csr = x509.load_der_x509_csr(row.csr)
            device_id = None
            if row.renews_serial:
                device_id = await pki_store.device_of(session, row.renews_serial)
            # An enterprise CA may hold it in turn: the transaction then stays pending (polled).
            await issue_request(session, self.sources, self.settings, row, csr, device_id=device_id)
            events.emit(
                session,
                SCEP_REQUEST_APPROVED,
                user_id=row.user_id,
                request_id=row.id,
                transaction_id=row.transaction_id,
                serial=row.cert_serial,
                by=by,
            )
        log.info("scep request %d approved by %s", request_id, by)
        return row

    async def reject(self, request_id: int, *, by: str) -> ScepTransaction:
        async with self.db.transaction() as session:
            row = await _decide(session, request_id, TransactionStatus.REJECTED, by)
            events.emit(
                session,
                SCEP_REQUEST_REJECTED,
                user_id=row.user_id,
                request_id=row.id,
                transaction_id=row.transaction_id,
                by=by,
            )
        log.info("scep request %d rejected by %s", request_id, by)
        return row


async def _decide(
    session: AsyncSession, request_id: int, status: TransactionStatus, by: str
) -> ScepTransaction:
    decided, row = await store.decide(session, request_id, status, datetime.now(UTC), by)
    if row is None:
        raise NotFound(f"no SCEP request {request_id}")
    if not decided:
        raise Conflict(f"SCEP request {request_id} is {row.status}, not pending", current_status=row.status)
    return row
