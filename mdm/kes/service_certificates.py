"""Binding a KES device to an issued certificate, repeated certificate requests, and a request
that the rule's source (an enterprise CA) holds pending.

A pending request is a ``certificate_requests`` row of purpose ``kes:<device id>`` (``mdm.pki.requests``),
polled by the ``pki.requests`` worker. The agent is told ``503 certificate_pending`` with
``Retry-After`` and sends the same request again; once the row is issued, that repeat binds the
certificate (``service_enroll``). The CSR's key is the agent's: nothing secret is kept here."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import ServiceError
from mdm.db.models import Device, utcnow
from mdm.enroll.tables import Enrollment
from mdm.kes import store
from mdm.kes.certificates import (
    CertificateRequestEnded,
    CertificateStillPending,
    answer,
    digest,
    parse_csr,
)
from mdm.kes.event_types import KES_CERTIFICATE_RENEWED, KES_DEVICE_ENROLLED
from mdm.kes.identity import KesRefused
from mdm.kes.tables import KesDevice
from mdm.pki import rules, store_requests
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import serial_hex
from mdm.pki.requests import PendingCertificate
from mdm.pki.source_errors import CertificateDenied
from mdm.pki.sources import SourceSet
from mdm.pki.tables import CertificateRequestRecord, RequestStatus

MAX_RETRY_AFTER = 3600


def purpose(device_id: int) -> str:
    return f"kes:{device_id}"


def still_pending(pending: PendingCertificate) -> CertificateStillPending:
    return CertificateStillPending(pending.description, max(1, min(MAX_RETRY_AFTER, pending.retry_after)))


async def decided(session: AsyncSession, device_id: int, now: datetime) -> CertificateRequestRecord:
    """The device's latest request once the CA issued it; else the answer the agent gets: still
    pending (retry after the worker's next poll), denied with the CA's message, or ended."""
    row = await store_requests.latest_for_purpose(session, purpose(device_id))
    if row is None:
        raise KesRefused(409, "request_id_reused", "request_id_reused",
                         "the certificate request of this request id is gone")
    if row.status == RequestStatus.PENDING.value:
        wait = int((row.next_poll_at - now).total_seconds()) + 1
        raise CertificateStillPending(
            f"certificate request {row.id} is still pending at {row.source} (CA request "
            f"{row.ca_request_id})" + (f": {row.message}" if row.message else ""),
            max(1, min(MAX_RETRY_AFTER, wait)),
        )
    if row.status == RequestStatus.DENIED.value:
        raise CertificateDenied(row.source, row.message or "denied", row.ca_request_id)
    if row.status != RequestStatus.ISSUED.value or row.serial is None:
        raise CertificateRequestEnded(
            f"certificate request {row.id} at {row.source} was {row.status}"
            + (f": {row.message}" if row.message else "") + "; send a new request",
            request=row.id,
        )
    return row


def _gone() -> KesRefused:
    return KesRefused(
        409, "request_id_reused", "request_id_reused", "the certificate of this request is gone"
    )


def bind_first(
    session: AsyncSession, device: Device, kes: KesDevice, enrollment: Enrollment, cert: x509.Certificate
) -> None:
    """The first certificate: the device bound to it and given to the enrollment's user."""
    serial = serial_hex(cert.serial_number)
    now = utcnow()
    kes.cert_fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    kes.previous_fingerprint = None
    kes.bound_at = kes.updated_at = now
    kes.renew_requested_at = None
    kes.cert_request_serial = serial
    device.user_id = enrollment.user_id
    device.cert_serial = serial
    device.cert_not_after = cert.not_valid_after_utc
    enrollment.device_id = device.id
    events.emit(
        session, KES_DEVICE_ENROLLED, device_id=device.id, user_id=enrollment.user_id,
        identifier=device.identifier, enrollment_id=enrollment.id, cert_serial=serial,
        not_after=cert.not_valid_after_utc.isoformat(),
    )


def bind_renewal(
    session: AsyncSession, device: Device, kes: KesDevice, cert: x509.Certificate,
    previous: bytes | None, renews_serial: str | None,
) -> None:
    """A renewal: the binding moves to ``cert``; ``previous`` stays bound as the previous one."""
    serial = serial_hex(cert.serial_number)
    kes.previous_fingerprint = previous
    kes.cert_fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    kes.bound_at = kes.updated_at = utcnow()
    kes.renew_requested_at = None
    kes.cert_request_serial = serial
    device.cert_serial = serial
    device.cert_not_after = cert.not_valid_after_utc
    events.emit(
        session, KES_CERTIFICATE_RENEWED, device_id=device.id, user_id=device.user_id,
        identifier=device.identifier, cert_serial=serial, renews_serial=renews_serial,
        not_after=cert.not_valid_after_utc.isoformat(),
    )


async def repeat(
    session: AsyncSession, ca: CertificateAuthority, sources: SourceSet, device: Device, kes: KesDevice,
    csr_pem: str,
) -> dict[str, Any]:
    """A request id seen before: the same certificate again, or 409 for another CSR. A request
    that was pending at the CA: still pending, denied, or (issued meanwhile) bound now."""
    if kes.cert_request_hash is None or bytes(kes.cert_request_hash) != digest(csr_pem):
        raise KesRefused(409, "request_id_reused", "request_id_reused",
                         "this request id was used for another certificate request")
    if kes.cert_request_serial is None:
        return await _issued_meanwhile(session, ca, sources, device, kes, csr_pem)
    record = await store.certificate(session, kes.cert_request_serial)
    if record is None or record.pem is None:
        raise _gone()
    cert = x509.load_pem_x509_certificate(record.pem.encode())
    rule = await rules.get_rule(session, "mobile")
    return answer(cert, _chain(ca, sources, record.source), rule.renewal_days)


async def _issued_meanwhile(
    session: AsyncSession, ca: CertificateAuthority, sources: SourceSet, device: Device, kes: KesDevice,
    csr_pem: str,
) -> dict[str, Any]:
    row = await decided(session, device.id, utcnow())
    record = await store.certificate(session, row.serial or "")
    if record is None or record.pem is None:
        raise _gone()
    cert = x509.load_pem_x509_certificate(record.pem.encode())
    if cert.public_key() != parse_csr(csr_pem).key:  # the CA certified another key: never bind it
        raise KesRefused(409, "request_id_reused", "key_mismatch",
                         "the issued certificate is not for the key of this request")
    if row.renews_serial is None:
        enrollment = await store.enrollment(session, kes.enrollment_id) if kes.enrollment_id else None
        if enrollment is None:
            raise KesRefused(409, "not_registered", "no_enrollment", "the device's enrollment is gone")
        bind_first(session, device, kes, enrollment, cert)
    else:
        bind_renewal(session, device, kes, cert, kes.cert_fingerprint, row.renews_serial)
    rule = await rules.get_rule(session, "mobile")
    return answer(cert, _chain(ca, sources, record.source), rule.renewal_days)


def _chain(ca: CertificateAuthority, sources: SourceSet, source: str) -> list[x509.Certificate]:
    if source == "internal":
        return list(ca.chain)
    try:
        return sources.get(source).trust_anchors()
    except ServiceError:  # the source was removed from the configuration since
        return []
