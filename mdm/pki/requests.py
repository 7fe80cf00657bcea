"""Issuing through a source that may hold a request pending (an enterprise CA waiting for a CA
manager's approval), deny it, or be unavailable.

``request_certificate`` is ``issuance.issue`` for callers that can wait: a pending answer becomes
a ``certificate_requests`` row and ``cert_request_pending`` in the caller's transaction, and a
``PendingCertificate`` is returned; the ``pki.requests`` worker polls the CA and records the
certificate exactly as ``issue`` does once it is issued. A denial or an unavailable source
propagates (``CertificateDenied`` 422, ``SourceUnavailable`` 503) with nothing recorded in the
caller's transaction; ``refusals_recorded`` wraps that transaction and writes the
``cert_request_denied`` / ``cert_request_failed`` event in a transaction of its own after the
rollback, so the refusal stays visible while nothing is half-recorded.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import InvalidArgument
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.pki import issuance, store_requests
from mdm.pki.event_types import CERT_REQUEST_DENIED, CERT_REQUEST_FAILED, CERT_REQUEST_PENDING
from mdm.pki.issuance import CertificateRequest, CertificateSource, IssuedIdentity
from mdm.pki.request_keys import RequestKeys
from mdm.pki.source_errors import CertificateDenied, CertificatePending, Refusal, SourceUnavailable
from mdm.pki.tables import CertificateRequestRecord, RequestStatus

log = logging.getLogger("mdm.pki.requests")

DEFAULT_POLL_SECONDS = 60.0


@dataclass(frozen=True)
class PendingCertificate:
    """A request the source holds; ``id`` is our ``certificate_requests`` row."""

    id: int
    source: str
    ca_request_id: str
    message: str
    purpose: str
    retry_after: int  # seconds a client should wait before asking again

    @property
    def description(self) -> str:
        text = f"certificate request {self.id} is pending at {self.source} (CA request {self.ca_request_id})"
        return text + (f": {self.message}" if self.message else "")


Outcome = IssuedIdentity | PendingCertificate


async def request_certificate(
    session: AsyncSession,
    source: CertificateSource,
    request: CertificateRequest,
    *,
    purpose: str,
    keys: RequestKeys | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
) -> Outcome:
    """Issue, or record the request as pending. A key generated here is kept sealed by ``keys``
    in the request row (required when the request has no public key: the certificate would
    otherwise be useless once issued)."""
    prepared = await issuance.prepare(source, request)
    try:
        cert, chain = await issuance.sign(source, prepared)
    except CertificatePending as exc:
        return await _record_pending(session, source, prepared, exc, purpose, keys, poll_seconds)
    except (CertificateDenied, SourceUnavailable) as exc:
        exc.refusal = Refusal(
            cert_type=request.type.value, subject=request.common_name, purpose=purpose,
            user_id=request.user_id, device_id=request.device_id,
        )
        raise
    return await issuance.record_issued(session, source.name, prepared.request, cert, chain, prepared.key)


async def _record_pending(
    session: AsyncSession,
    source: CertificateSource,
    prepared: issuance.Prepared,
    exc: CertificatePending,
    purpose: str,
    keys: RequestKeys | None,
    poll_seconds: float,
) -> PendingCertificate:
    request = prepared.request
    sealed = None
    if prepared.key is not None:
        if keys is None:
            raise InvalidArgument("a key generated here cannot be kept for a pending request (no key store)")
        sealed = keys.seal(prepared.key)
    now = utcnow()
    csr_pem = (
        request.csr.public_bytes(serialization.Encoding.PEM).decode() if request.csr is not None else None
    )
    row = await store_requests.add(session, CertificateRequestRecord(
        source=source.name, ca_request_id=exc.request_id, cert_type=request.type.value,
        user_id=request.user_id, device_id=request.device_id, common_name=request.common_name,
        template=request.template, status=RequestStatus.PENDING.value, message=exc.ca_message or None,
        purpose=purpose, csr_pem=csr_pem, encrypted_key=sealed,
        renews_serial=issuance.normalise_serial(request.renews_serial) if request.renews_serial else None,
        attempts=0, next_poll_at=now + timedelta(seconds=poll_seconds), created_at=now, updated_at=now,
    ))
    events.emit(
        session, CERT_REQUEST_PENDING, user_id=request.user_id, device_id=request.device_id,
        request_id=row.id, source=source.name, ca_request_id=exc.request_id, cert_type=request.type.value,
        subject=request.common_name, purpose=purpose, message=exc.ca_message,
    )
    log.info("certificate request %d (%s, %s) is pending at %s as CA request %s",
             row.id, request.type.value, purpose, source.name, exc.request_id)
    return PendingCertificate(row.id, source.name, exc.request_id, exc.ca_message, purpose,
                              max(1, int(poll_seconds)))


def request_of(row: CertificateRequestRecord) -> CertificateRequest:
    """The request a pending row stands for, as ``issuance.record_issued`` records it."""
    from mdm.pki.tables import CertType

    return CertificateRequest(
        type=CertType(row.cert_type), common_name=row.common_name, user_id=row.user_id,
        device_id=row.device_id, template=row.template, renews_serial=row.renews_serial,
    )


@asynccontextmanager
async def refusals_recorded(db: Database) -> AsyncIterator[None]:
    """Wrap the caller's transaction: a denial or an unavailable source raised by
    ``request_certificate`` gets its event in a transaction of its own after the rollback."""
    try:
        yield
    except (CertificateDenied, SourceUnavailable) as exc:
        await record_refusal(db, exc)
        raise


async def record_refusal(db: Database, exc: CertificateDenied | SourceUnavailable) -> None:
    refusal = exc.refusal
    if refusal is None or exc.recorded:
        return
    exc.recorded = True
    denied = isinstance(exc, CertificateDenied)
    message = exc.ca_message if isinstance(exc, CertificateDenied) else exc.reason
    log.warning("certificate request for %s (%s, %s) %s by %s: %s", refusal.subject, refusal.cert_type,
                refusal.purpose, "denied" if denied else "failed", exc.source, message)
    event_type = CERT_REQUEST_DENIED if denied else CERT_REQUEST_FAILED
    try:
        async with db.transaction() as session:
            events.emit(
                session, event_type,
                user_id=refusal.user_id, device_id=refusal.device_id, request_id=None, source=exc.source,
                ca_request_id=exc.request_id if isinstance(exc, CertificateDenied) else None,
                cert_type=refusal.cert_type, subject=refusal.subject, purpose=refusal.purpose,
                message=message,
            )
    except Exception:
        log.exception("could not record the refusal of a certificate request")
