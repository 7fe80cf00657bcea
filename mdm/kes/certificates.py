"""The certificate request of the KES agent (a PKCS#10 CSR in PEM) and the answer that carries the
issued certificate (docs/kes-protocol.md, ``certificate``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from mdm.core.errors import InvalidArgument, ServiceError
from mdm.kes.identity import KesRefused
from mdm.kes.messages import PROTOCOL_VERSION
from mdm.pki.issuance import check_public_key


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class Csr:
    key: CertificatePublicKeyTypes
    common_name: str | None
    digest: bytes  # SHA-256 of the PEM text: what a repeated request id is compared with
    request: x509.CertificateSigningRequest  # handed to a source that needs the requester's PKCS#10


def digest(csr_pem: str) -> bytes:
    return hashlib.sha256(csr_pem.encode()).digest()


def parse_csr(text: str) -> Csr:
    """The CSR's public key and common name; ``csr_invalid`` unless it is a PKCS#10 request whose
    signature verifies, with an acceptable key (RSA >= 2048, EC P-256/P-384)."""
    try:
        csr = x509.load_pem_x509_csr(text.encode())
        key = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise KesRefused(
            400, "csr_invalid", "unreadable", f"the CSR is not a PEM PKCS#10 request: {exc}"
        ) from None
    if not valid:
        raise KesRefused(400, "csr_invalid", "bad_signature", "the CSR's signature does not verify")
    try:
        check_public_key(key)
    except InvalidArgument as exc:
        raise KesRefused(400, "csr_invalid", "weak_key", exc.message) from None
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value).strip() if names else ""
    return Csr(key, cn or None, digest(text), csr)


def answer(cert: x509.Certificate, chain: list[x509.Certificate], renewal_days: int) -> dict[str, Any]:
    """The certificate answer: the certificate, its chain (issuer first), when it expires and
    when the agent should renew on its own (the ``mobile`` rule's ``renewal_days`` before)."""
    not_after = cert.not_valid_after_utc
    return {
        "v": PROTOCOL_VERSION,
        "certificate": pem(cert),
        "chain": [pem(c) for c in chain if c != cert],
        "not_after": not_after.isoformat(),
        "renew_after": (not_after - timedelta(days=renewal_days)).isoformat(),
    }


class CertificateStillPending(ServiceError):
    """The certificate source (an enterprise CA) holds the request for a CA manager's approval:
    ``503 certificate_pending`` with ``Retry-After``; the agent sends the same request (same
    ``request_id``, same CSR) again after that many seconds (docs/kes-protocol.md)."""

    status = 503
    code = "certificate_pending"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class CertificateRequestEnded(ServiceError):
    """A request that was pending ended without a certificate (given up, or cancelled by the
    administrator); a denial by the CA is ``mdm.pki.source_errors.CertificateDenied``."""

    status = 422
    code = "certificate_request_failed"
