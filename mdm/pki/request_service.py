"""Pending certificate requests after submission: the administrator's view (list, show, poll
now, cancel) and the ``pki.requests`` worker's pass over the due ones.

A pass claims due rows in a short transaction (their ``next_poll_at`` moved ahead, so another
replica skips them), asks each one's source outside any transaction, then records the outcome
in one transaction per row: issued (recorded exactly like ``issuance.issue``: the certificate
record and ``cert_issued`` with the status change), denied (``cert_request_denied``), still
pending (polled again after ``[pki] request_poll_seconds``; given up as failed after
``request_max_days``), source unavailable (backoff per source, ``mdm.core.backoff``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.backoff import Backoff
from mdm.core.errors import Conflict, NotFound, ServiceError
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.pki import issuance, store_requests
from mdm.pki.event_types import CERT_REQUEST_CANCELLED, CERT_REQUEST_DENIED, CERT_REQUEST_FAILED
from mdm.pki.requests import request_of
from mdm.pki.source_errors import CertificateDenied, CertificatePending, SourceUnavailable
from mdm.pki.sources import SourceSet
from mdm.pki.tables import CertificateRequestRecord, RequestStatus

log = logging.getLogger("mdm.pki.requests")

BATCH = 20
MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class RequestSettings:
    poll_seconds: float = 60.0
    max_days: float = 14.0


@dataclass
class PollReport:
    issued: int = 0
    denied: int = 0
    pending: int = 0
    unavailable: int = 0
    failed: int = 0


class RequestService:
    def __init__(self, db: Database, sources: SourceSet, settings: Callable[[], RequestSettings]) -> None:
        self.db = db
        self.sources = sources
        self.settings = settings
        self._backoff: dict[str, Backoff] = {}

    # ---- the administrator's view ----
    async def page(
        self, *, limit: int, before_id: int | None = None, status: str | None = None
    ) -> tuple[list[CertificateRequestRecord], int | None]:
        if status is not None and status not in {s.value for s in RequestStatus}:
            known = ", ".join(s.value for s in RequestStatus)
            raise ServiceError(f"status: unknown request status {status!r} (known: {known})")
        async with self.db.session() as session:
            rows = await store_requests.page(session, limit=limit, before_id=before_id, status=status)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].id if more and rows else None)

    async def get(self, request_id: int) -> CertificateRequestRecord:
        async with self.db.session() as session:
            return await _get(session, request_id)

    async def cancel(self, request_id: int, *, by: str) -> CertificateRequestRecord:
        """Stop polling: the CA keeps its copy (withdraw it there too); a later issuance is ignored."""
        async with self.db.transaction() as session:
            row = await _locked(session, request_id)
            if row.status != RequestStatus.PENDING.value:
                raise Conflict(f"certificate request {row.id} is {row.status}, not pending")
            _finish(session, row, RequestStatus.CANCELLED, f"cancelled by {by}", CERT_REQUEST_CANCELLED)
        log.info("certificate request %d cancelled by %s (CA request %s at %s is not withdrawn there)",
                 row.id, by, row.ca_request_id, row.source)
        return row

    async def poll_now(self, request_id: int) -> CertificateRequestRecord:
        """Ask the CA about one pending request at once."""
        async with self.db.session() as session:
            row = await _get(session, request_id)
        if row.status != RequestStatus.PENDING.value:
            raise Conflict(f"certificate request {row.id} is {row.status}, not pending")
        await self._poll(row.id, row.source, row.ca_request_id, utcnow(), raise_unavailable=True)
        return await self.get(request_id)

    # ---- the worker's pass ----
    async def poll_due(self, now: datetime | None = None, batch: int = BATCH) -> PollReport:
        now = now or utcnow()
        lease = now + timedelta(seconds=max(self.settings().poll_seconds, 30.0))
        # The due ids are read outside the write transaction (on SQLite a pass that found nothing
        # held the server's one writer up to 1 s on a busy loop); the claim's conditional UPDATE
        # checks again that each is still pending and due.
        async with self.db.session() as session:
            due = await store_requests.due_ids(session, now, batch)
        claimed: list[tuple[int, str, str]] = []
        if due:
            async with self.db.transaction(inline=True) as session:
                claimed = await self._claim(session, due, now, lease)
        report = PollReport()
        for request_id, source, ca_request_id in claimed:
            try:
                outcome = await self._poll(request_id, source, ca_request_id, now)
            except Exception:  # a connector bug must not stop the others; the lease expires
                log.exception("polling certificate request %d failed; retried after the lease", request_id)
                outcome = "unavailable"
            setattr(report, outcome, getattr(report, outcome) + 1)
        if claimed:
            log.info("certificate requests polled: %d issued, %d denied, %d still pending, "
                     "%d source unavailable, %d given up", report.issued, report.denied, report.pending,
                     report.unavailable, report.failed)
        return report

    @staticmethod
    async def _claim(
        session: AsyncSession, due: list[int], now: datetime, lease: datetime
    ) -> list[tuple[int, str, str]]:
        claimed = []
        for request_id in due:
            if await store_requests.claim(session, request_id, now, lease):
                row = await store_requests.get(session, request_id)
                if row is not None:
                    claimed.append((row.id, row.source, row.ca_request_id))
        return claimed

    async def _poll(
        self, request_id: int, source_name: str, ca_request_id: str, now: datetime,
        *, raise_unavailable: bool = False,
    ) -> str:
        settings = self.settings()
        try:
            source = self.sources.get(source_name)
            cert, chain = await source.poll(ca_request_id)
        except CertificatePending as exc:
            return await self._still_pending(request_id, exc.ca_message, now, settings)
        except CertificateDenied as exc:
            async with self.db.transaction() as session:
                row = await _locked(session, request_id)
                if row.status == RequestStatus.PENDING.value:
                    _finish(session, row, RequestStatus.DENIED, exc.ca_message, CERT_REQUEST_DENIED)
            log.warning("certificate request %d denied by %s: %s", request_id, source_name, exc.ca_message)
            return "denied"
        except (SourceUnavailable, ServiceError) as exc:
            backoff = self._backoff.setdefault(
                source_name, Backoff(settings.poll_seconds, max(MAX_BACKOFF_SECONDS, settings.poll_seconds))
            )
            delay = backoff.next_delay()
            log.warning("certificate request %d: %s; asking again in %.0f s", request_id, exc.message, delay)
            outcome = await self._still_pending(request_id, None, now, settings, delay, str(exc.message))
            if raise_unavailable:
                raise
            return "unavailable" if outcome == "pending" else outcome
        self._backoff.pop(source_name, None)
        async with self.db.transaction() as session:
            row = await _locked(session, request_id)
            if row.status != RequestStatus.PENDING.value:
                log.warning("certificate request %d was issued by %s but is %s here: not recorded",
                            request_id, source_name, row.status)
                return "failed"
            identity = await issuance.record_issued(session, source_name, request_of(row), cert, chain, None)
            row.status = RequestStatus.ISSUED.value
            row.serial = identity.record.serial
            row.message = None
            row.attempts += 1
            row.updated_at = utcnow()
        log.info("certificate request %d issued by %s: serial %s",
                 request_id, source_name, identity.record.serial)
        return "issued"

    async def _still_pending(
        self, request_id: int, message: str | None, now: datetime, settings: RequestSettings,
        delay: float | None = None, failure: str | None = None,
    ) -> str:
        async with self.db.transaction() as session:
            row = await _locked(session, request_id)
            if row.status != RequestStatus.PENDING.value:
                return "pending"
            row.attempts += 1
            row.updated_at = utcnow()
            if message:
                row.message = message
            if now - row.created_at > timedelta(days=settings.max_days):
                why = f"still pending after {settings.max_days:g} days ([pki] request_max_days): given up"
                if failure:
                    why += f"; last error: {failure}"
                _finish(session, row, RequestStatus.FAILED, why, CERT_REQUEST_FAILED)
                log.warning("certificate request %d: %s", request_id, why)
                return "failed"
            row.next_poll_at = now + timedelta(seconds=delay if delay is not None else settings.poll_seconds)
        return "pending"


def _finish(
    session: AsyncSession, row: CertificateRequestRecord, status: RequestStatus, message: str,
    event: events.EventType,
) -> None:
    row.status = status.value
    row.message = message
    row.encrypted_key = None  # nothing will be issued for it
    row.updated_at = utcnow()
    events.emit(
        session, event, user_id=row.user_id, device_id=row.device_id, request_id=row.id, source=row.source,
        ca_request_id=row.ca_request_id, cert_type=row.cert_type, subject=row.common_name,
        purpose=row.purpose, message=message,
    )


async def _get(session: AsyncSession, request_id: int) -> CertificateRequestRecord:
    row = await store_requests.get(session, request_id)
    if row is None:
        raise NotFound(f"no certificate request {request_id}")
    return row


async def _locked(session: AsyncSession, request_id: int) -> CertificateRequestRecord:
    row = await store_requests.get_for_update(session, request_id)
    if row is None:
        raise NotFound(f"no certificate request {request_id}")
    return row
