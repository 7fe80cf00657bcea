"""Issuing the certificate of an accepted SCEP request: shared by the protocol (issued at once)
and the approval queue (issued when an administrator approves).

The certificate comes from the source of the issuance rule of ``[scep] cert_type`` (the internal
CA, or an enterprise CA). An enterprise CA may hold the request: the SCEP transaction then stays
pending, linked to the ``certificate_requests`` row by its purpose ``scep:<transactionID>``, and
the client's CertPoll/GetCertInitial is answered from that row (``sync_with_request``)."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.pki import issuance, rules, store_requests
from mdm.pki import store as pki_store
from mdm.pki.requests import PendingCertificate, request_certificate
from mdm.pki.sources import SourceSet
from mdm.pki.tables import CertType, RequestStatus
from mdm.scep.settings import ScepConfig
from mdm.scep.tables import ScepTransaction, TransactionStatus


def purpose_of(row: ScepTransaction) -> str:
    return f"scep:{row.transaction_id}"


async def issue_request(
    session: AsyncSession,
    sources: SourceSet,
    settings: ScepConfig,
    row: ScepTransaction,
    csr: x509.CertificateSigningRequest,
    *,
    device_id: int | None = None,
    poll_seconds: float = 60.0,
) -> x509.Certificate | None:
    """Issue ``row``'s certificate per ``[scep]`` (type, validity) and the type's rule (source,
    template) and mark the request issued; None when the source holds it pending (the row stays
    pending). A denial or an unavailable source propagates (the caller's transaction rolls back)."""
    rule = await rules.get_rule(session, settings.cert_type)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    fields: dict[str, Any] = {
        "type": CertType(settings.cert_type),
        "common_name": str(names[0].value).strip(),
        "public_key": csr.public_key(),
        "csr": csr,  # an enterprise CA checks the requester's own signature
        "user_id": row.user_id,
        "device_id": device_id,
        "renews_serial": row.renews_serial,
        "template": rule.template,
        # The requester is the transaction's user (an AD CS source enrolls on behalf of
        # DOMAIN\\user), not the CSR's common name ("alice device 1").
        "uid": await pki_store.user_name(session, row.user_id) if row.user_id is not None else None,
    }
    if settings.validity_days:
        fields["days"] = settings.validity_days
    outcome = await request_certificate(
        session, sources.get(rule.source), issuance.CertificateRequest(**fields), purpose=purpose_of(row),
        poll_seconds=poll_seconds,
    )
    if isinstance(outcome, PendingCertificate):
        row.status = TransactionStatus.PENDING.value
        return None
    row.status = TransactionStatus.ISSUED.value
    row.cert_serial = outcome.serial_hex
    return outcome.certificate


async def sync_with_request(session: AsyncSession, row: ScepTransaction) -> str | None:
    """A pending transaction whose certificate request the CA has decided: take the outcome
    (issued: the serial; denied, failed, cancelled: rejected). Returns the CA's message on a
    refusal, else None."""
    request = await store_requests.latest_for_purpose(session, purpose_of(row))
    if request is None or row.status != TransactionStatus.PENDING.value:
        return None
    if request.status == RequestStatus.ISSUED.value and request.serial:
        row.status = TransactionStatus.ISSUED.value
        row.cert_serial = request.serial
        return None
    if request.status in (RequestStatus.DENIED, RequestStatus.FAILED, RequestStatus.CANCELLED):
        row.status = TransactionStatus.REJECTED.value
        row.decided_by = request.source
        return request.message or f"the certificate request was {request.status} at {request.source}"
    return None
