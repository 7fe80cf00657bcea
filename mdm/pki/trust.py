"""Client-certificate trust for every listener that accepts device certificates (iOS mTLS,
``Mdm-Signature`` signers, proxy-forwarded ``Client-Cert``, KES mutual TLS).

Chain building uses ``cryptography.x509.verification`` (RFC 5280 path validation). Results are
cached by the SHA-256 of the DER so that steady-state polls do not re-parse or re-verify a
certificate; revocation is checked on every use against an in-memory set of revoked serials
(small: only revoked, unexpired certificates), which the PKI service refreshes.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from cachetools import LRUCache
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from mdm.pki.x509_errors import CERTIFICATE_ERRORS

DEFAULT_CACHE_SIZE = 50_000


class IdentityRejected(Exception):
    """The certificate is not acceptable; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    """What a verified client certificate is used for; the parsed certificate itself is not kept
    (it was most of a cache entry's memory)."""

    fingerprint: bytes  # SHA-256 of the DER
    serial_hex: str
    not_before: datetime
    not_after: datetime
    subject_cn: str | None


class ClientCertVerifier:
    def __init__(self, trusted_roots: list[x509.Certificate], intermediates: list[x509.Certificate],
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._store = Store(trusted_roots)
        self._intermediates = list(intermediates)
        self._cache: LRUCache[bytes, VerifiedCertificate] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()
        self.revoked: frozenset[str] = frozenset()
        # (store, whole second, verifier): one policy build per second, not per certificate.
        self._built: tuple[Store, int, ClientVerifier] | None = None

    def _verifier(self, now: datetime, not_before: datetime) -> ClientVerifier:
        # Device certificates often carry no SAN (iOS identities, enterprise templates), so the
        # leaf policy is relaxed; the EKU is checked separately below. CA policy stays strict.
        # One verifier per second (the policy build was a fifth of a cold chain check), at the
        # start of that second; the leaf's own validity is checked against ``now`` itself before.
        # A leaf valid only since a moment of this second gets a verifier at ``now``.
        second = int(now.timestamp())
        at = datetime.fromtimestamp(second, UTC)
        store = self._store
        if not_before > at:
            return self._build(store, now)
        built = self._built
        if built is not None and built[0] is store and built[1] == second:
            return built[2]
        verifier = self._build(store, at)
        self._built = (store, second, verifier)
        return verifier

    @staticmethod
    def _build(store: Store, at: datetime) -> ClientVerifier:
        return (
            PolicyBuilder()
            .store(store)
            .time(at)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
            )
            .build_client_verifier()
        )

    def set_anchors(self, trusted_roots: list[x509.Certificate]) -> None:
        """Replace the trust anchors (an enterprise CA whose certificates devices now present).
        Cached positive results stay valid: an anchor is only ever added while running."""
        store = Store(trusted_roots)
        with self._lock:
            self._store = store

    def set_revoked(self, serials: set[str] | frozenset[str]) -> None:
        """Replace the revoked set (lower-case hex serials); takes effect on the next verify."""
        self.revoked = frozenset(serials)

    def add_revoked(self, serial: str) -> None:
        self.revoked = self.revoked | {serial}

    def verify_der(
        self,
        der: bytes,
        extra_intermediates: list[x509.Certificate] | None = None,
        *,
        fingerprint: bytes | None = None,
        parsed: x509.Certificate | None = None,
    ) -> VerifiedCertificate:
        """``fingerprint`` (the SHA-256 of ``der``) and ``parsed`` (``der`` loaded): what the
        caller already computed, so that a cold certificate is hashed and parsed once."""
        if fingerprint is None:
            fingerprint = hashlib.sha256(der).digest()
        now = datetime.now(UTC)
        with self._lock:
            hit = self._cache.get(fingerprint)  # a hit becomes the most recently used
        if hit is None:
            try:
                cert = parsed if parsed is not None else x509.load_der_x509_certificate(der)
            except CERTIFICATE_ERRORS:
                raise IdentityRejected("malformed", "client certificate is not valid DER") from None
            hit = self._verify_chain(cert, fingerprint, now, extra_intermediates or [])
            with self._lock:
                self._cache[fingerprint] = hit  # evicts the least recently used past cache_size
        if hit.not_after < now:
            raise IdentityRejected(
                "expired", f"certificate {hit.serial_hex} expired at {hit.not_after.isoformat()}"
            )
        if hit.serial_hex in self.revoked:
            raise IdentityRejected("revoked", f"certificate {hit.serial_hex} is revoked")
        return hit

    def verify(self, cert: x509.Certificate) -> VerifiedCertificate:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.verify_der(cert.public_bytes(Encoding.DER))

    def _verify_chain(
        self, cert: x509.Certificate, fingerprint: bytes, now: datetime, extra: list[x509.Certificate]
    ) -> VerifiedCertificate:
        not_after, not_before = cert.not_valid_after_utc, cert.not_valid_before_utc
        if not_after < now:
            raise IdentityRejected("expired", f"certificate expired at {not_after.isoformat()}")
        if not_before > now:
            raise IdentityRejected("not_yet_valid", "certificate is not yet valid")
        try:
            self._verifier(now, not_before).verify(cert, self._intermediates + extra)
        except VerificationError as exc:
            raise IdentityRejected(
                "untrusted", f"certificate does not chain to a trusted CA: {exc}"
            ) from None
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        client_usages = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
        if usages is not None and not client_usages & set(usages):
            raise IdentityRejected("wrong_usage", "certificate is not valid for client authentication (EKU)")
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return VerifiedCertificate(
            fingerprint=fingerprint,
            serial_hex=format(cert.serial_number, "x"),
            not_before=not_before,
            not_after=not_after,
            subject_cn=str(cn[0].value) if cn else None,
        )
