"""Issuing the certificate of an accepted SCEP request: shared by the protocol (issued at once)
and the approval queue (issued when an administrator approves)."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.pki import issuance
from mdm.pki.issuance import CertificateSource
from mdm.pki.tables import CertType
from mdm.scep.settings import ScepConfig
from mdm.scep.tables import ScepTransaction, TransactionStatus


async def issue_request(
    session: AsyncSession,
    source: CertificateSource,
    settings: ScepConfig,
    row: ScepTransaction,
    csr: x509.CertificateSigningRequest,
    *,
    device_id: int | None = None,
) -> x509.Certificate:
    """Issue ``row``'s certificate per ``[scep]`` (type, validity) and mark the request issued."""
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    fields: dict[str, Any] = {
        "type": CertType(settings.cert_type),
        "common_name": str(names[0].value).strip(),
        "public_key": csr.public_key(),
        "user_id": row.user_id,
        "device_id": device_id,
        "renews_serial": row.renews_serial,
    }
    if settings.validity_days:
        fields["days"] = settings.validity_days
    identity = await issuance.issue(session, source, issuance.CertificateRequest(**fields))
    row.status = TransactionStatus.ISSUED.value
    row.cert_serial = identity.serial_hex
    return identity.certificate
