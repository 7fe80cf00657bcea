"""Device identity on the iOS listener: which certificate sent this request, and which enrollment
it is bound to.

Sources, in order: ``Mdm-Signature`` (detached CMS SignedData over the raw body), the TLS client
certificate, or an RFC 9440 ``Client-Cert`` header from a configured trusted proxy. Chains are
verified by the shared ``ClientCertVerifier`` (cached by DER hash, revocation checked on every
use); this module adds a bounded cache of signer public keys so that a steady-state signed poll
costs one hash, two dict look-ups and one signature verification.

Identity problems are ``IdentityError`` (answered 400, never 401: a 401 makes devices unenroll).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from cachetools import LRUCache
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mdm.core.errors import ServiceError
from mdm.ios import cms as cms_reader
from mdm.pki import forwarded_cert
from mdm.pki.forwarded_cert import CLIENT_CERT_CHAIN_HEADER as CLIENT_CERT_CHAIN_HEADER  # re-exported
from mdm.pki.forwarded_cert import CLIENT_CERT_HEADER as CLIENT_CERT_HEADER
from mdm.pki.trust import ClientCertVerifier, IdentityRejected, VerifiedCertificate
from mdm.pki.x509_errors import CERTIFICATE_ERRORS

SIGNATURE_HEADER = "Mdm-Signature"
MAX_SIGNATURE_HEADER = 64 * 1024
# Signer plus intermediates; more is not a device's signature (and each costs a parse).
MAX_CERTIFICATES = 8

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class IdentityError(ServiceError):
    """The request's identity is missing, invalid, or not the one bound to the device (400)."""

    status = 400
    code = "identity_rejected"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    cert: VerifiedCertificate
    source: str  # "signature" | "tls" | "header"
    # CMS signingTime, when the signer put one in the signed attributes.
    signed_at: datetime | None = None

    @property
    def fingerprint(self) -> bytes:
        return self.cert.fingerprint


def _rejected(exc: IdentityRejected) -> IdentityError:
    return IdentityError(exc.reason, exc.message)


class IdentityResolver:
    def __init__(
        self,
        verifier: ClientCertVerifier,
        *,
        trusted_proxies: list[str],
        signature_max_age: float,
        cache_size: int,
    ) -> None:
        self.verifier = verifier
        self.trusted_proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self.signature_max_age = signature_max_age
        # signer certificate DER SHA-256 -> public key (parsed once).
        self._keys: LRUCache[bytes, _SignerEntry] = LRUCache(maxsize=cache_size)

    # ---- entry point -------------------------------------------------------------------------
    def identify(
        self,
        body: bytes,
        *,
        signature: str | None,
        tls_der: bytes | None,
        client_cert: str | None,
        client_cert_chain: str | None,
        peer: str | None,
    ) -> Identity:
        if signature is not None:
            return self.from_signature(signature, body)
        if tls_der is not None:
            return Identity(self._verify(tls_der, None), "tls")
        if client_cert is not None:
            if not self._is_trusted_proxy(peer):
                raise IdentityError(
                    "untrusted_proxy",
                    f"{CLIENT_CERT_HEADER} header from {peer}, which is not a trusted proxy",
                )
            try:
                der, chain = forwarded_cert.parse(client_cert, client_cert_chain)
            except forwarded_cert.ForwardedCertError as exc:
                raise IdentityError("malformed", str(exc)) from None
            return Identity(self._verify(der, chain), "header")
        raise IdentityError(
            "missing", "no device identity: send Mdm-Signature or connect with the enrollment certificate"
        )

    def _is_trusted_proxy(self, peer: str | None) -> bool:
        if not peer or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.trusted_proxies)

    def _verify(
        self,
        der: bytes,
        chain_der: list[bytes] | None,
        fingerprint: bytes | None = None,
        parsed: x509.Certificate | None = None,
    ) -> VerifiedCertificate:
        """``fingerprint``/``parsed``: the certificate's SHA-256 and parsed form, when known."""
        if fingerprint is None:
            fingerprint = hashlib.sha256(der).digest()
        extra: list[x509.Certificate] = []
        if chain_der and self._keys.get(fingerprint) is None:
            try:
                extra = [x509.load_der_x509_certificate(c) for c in chain_der]
            except CERTIFICATE_ERRORS:
                raise IdentityError("malformed", "certificate chain is not valid DER") from None
        try:
            verified = self.verifier.verify_der(der, extra or None, fingerprint=fingerprint, parsed=parsed)
        except IdentityRejected as exc:
            raise _rejected(exc) from None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise IdentityError("malformed", "the client certificate cannot be used") from None
        return verified

    # ---- Mdm-Signature -----------------------------------------------------------------------
    def from_signature(self, header: str, body: bytes) -> Identity:
        if len(header) > MAX_SIGNATURE_HEADER:
            raise IdentityError("malformed", "Mdm-Signature header is too long")
        try:
            # strict: only the base64 alphabet and correct padding (as b64decode(validate=True)).
            der = binascii.a2b_base64("".join(header.split()), strict_mode=True)
        except (binascii.Error, ValueError):
            raise IdentityError("malformed", "Mdm-Signature is not base64") from None
        try:
            return self._check_cms(der, body)
        except IdentityError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
            # asn1crypto parses lazily: malformed DER surfaces at first access, as any of these.
            raise IdentityError("malformed", "Mdm-Signature is not a CMS SignedData structure") from None

    def _check_cms(self, der: bytes, body: bytes) -> Identity:
        parts = cms_reader.read(der)
        signer = self._signer(parts)
        verified = self._verify(signer.der, signer.others, signer.fingerprint, signer.parsed)
        if parts.pss:
            raise IdentityError("unsupported", "RSASSA-PSS signatures are not supported")
        if parts.digest is None:
            raise IdentityError("unsupported", "the Mdm-Signature digest algorithm is not supported")
        if parts.signed_attrs is not None:
            digest = hashlib.new(parts.digest, body).digest()
            if parts.message_digest is None or not hmac.compare_digest(parts.message_digest, digest):
                raise IdentityError("bad_signature", "Mdm-Signature does not match the body (message digest)")
            to_verify = parts.signed_attrs
        else:
            to_verify = body
        _verify_signature(signer.key, parts.signature, to_verify, parts.digest)
        if parts.signing_time is not None:
            self._check_age(parts.signing_time)
        return Identity(verified, "signature", parts.signing_time)

    def _signer(self, parts: cms_reader.SignedParts) -> _Signer:
        """The certificate the SignerIdentifier names, its public key (cached), and the others."""
        if not parts.certificates:
            raise IdentityError("malformed", "Mdm-Signature carries no certificate")
        if len(parts.certificates) > MAX_CERTIFICATES:
            raise IdentityError(
                "malformed", f"Mdm-Signature carries more than {MAX_CERTIFICATES} certificates"
            )
        for index, cert_der in enumerate(parts.certificates):
            fingerprint = hashlib.sha256(cert_der).digest()
            entry: _SignerEntry | None = self._keys.get(fingerprint)
            parsed = None
            if entry is None:
                entry, parsed = _read_signer(cert_der)
                self._keys[fingerprint] = entry
            if parts.sid in entry.sids:
                others = [c for i, c in enumerate(parts.certificates) if i != index]
                return _Signer(entry.key(), cert_der, others, fingerprint, parsed)
        raise IdentityError("malformed", "Mdm-Signature signer certificate is not in the message")

    def _check_age(self, signed_at: datetime) -> None:
        age = (datetime.now(UTC) - signed_at).total_seconds()
        if age > self.signature_max_age or age < -self.signature_max_age:
            raise IdentityError(
                "replayed",
                f"Mdm-Signature signing time {signed_at.isoformat()} is outside the accepted window",
            )


@dataclass(frozen=True, slots=True)
class _Signer:
    key: CertificatePublicKeyTypes
    der: bytes
    others: list[bytes]  # the message's other certificates (intermediates, perhaps)
    fingerprint: bytes  # SHA-256 of der
    parsed: x509.Certificate | None  # when it was parsed for this request (a cold certificate)


@dataclass(frozen=True, slots=True)
class _SignerEntry:
    # The SubjectPublicKeyInfo DER, not the key object: loading it again costs ~1 µs per request
    # and the object was most of the entry's memory.
    key_der: bytes
    sids: tuple[bytes, ...]  # the DER SignerIdentifier forms that name this certificate

    def key(self) -> CertificatePublicKeyTypes:
        return cast(CertificatePublicKeyTypes, serialization.load_der_public_key(self.key_der))


def _signer_entry(cert_der: bytes) -> _SignerEntry:
    """The signer forms that name this certificate and its public key, read from the DER itself
    (the certificate's own issuer and serial bytes: what a SignerIdentifier repeats)."""
    return _read_signer(cert_der)[0]


def _read_signer(cert_der: bytes) -> tuple[_SignerEntry, x509.Certificate]:
    """``_signer_entry`` and the parsed certificate (which the chain check then reuses)."""
    try:
        issuer, serial, spki = _tbs_parts(cert_der)
        sids = [_der(0x30, issuer + serial)]  # IssuerAndSerialNumber
        cert = x509.load_der_x509_certificate(cert_der)
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            ski = None
        if ski:
            sids.append(_der(0x80, ski))  # [0] SubjectKeyIdentifier
        serialization.load_der_public_key(spki)  # a key we can use (or malformed)
    except (ValueError, x509.InvalidVersion, TypeError, KeyError, UnsupportedAlgorithm, cms_reader.DerError):
        raise IdentityError("malformed", "Mdm-Signature carries a malformed certificate") from None
    return _SignerEntry(spki, tuple(sids)), cert


def _tbs_parts(der: bytes) -> tuple[bytes, bytes, bytes]:
    """The DER of the issuer Name, the serial INTEGER (tag and length included) and the
    SubjectPublicKeyInfo of a certificate (RFC 5280 §4.1)."""
    _, cert_start, cert_end = _tlv(der, 0, len(der), 0x30)
    _, tbs_start, tbs_end = _tlv(der, cert_start, cert_end, 0x30)
    pos = tbs_start
    if pos < tbs_end and der[pos] == 0xA0:  # [0] version
        pos = _tlv(der, pos, tbs_end, 0xA0)[2]
    serial_at, _, serial_end = _tlv(der, pos, tbs_end, 0x02)
    pos = _tlv(der, serial_end, tbs_end, 0x30)[2]  # signature AlgorithmIdentifier
    issuer_at, _, pos = _tlv(der, pos, tbs_end, 0x30)
    issuer_end = pos
    pos = _tlv(der, pos, tbs_end, 0x30)[2]  # validity
    pos = _tlv(der, pos, tbs_end, 0x30)[2]  # subject
    spki_at, _, spki_end = _tlv(der, pos, tbs_end, 0x30)
    return der[issuer_at:issuer_end], der[serial_at:serial_end], der[spki_at:spki_end]


def _tlv(der: bytes, pos: int, end: int, tag: int) -> tuple[int, int, int]:
    """(element start, content start, element end) of the ``tag`` element at ``pos``."""
    if pos + 2 > end or der[pos] != tag:
        raise cms_reader.DerError(f"expected tag {tag:#x}")
    length, start = der[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > end:
            raise cms_reader.DerError("indefinite or oversized length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    if start + length > end:
        raise cms_reader.DerError("element runs past its parent")
    return pos, start, start + length


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _verify_signature(key: CertificatePublicKeyTypes, signature: bytes, data: bytes, hash_name: str) -> None:
    algorithm = _HASHES[hash_name]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            raise IdentityError("unsupported", "the signer's key type is not supported")
    except InvalidSignature:
        raise IdentityError("bad_signature", "Mdm-Signature does not verify") from None
    except UnsupportedAlgorithm:
        raise IdentityError("unsupported", "the signature algorithm is not supported") from None
