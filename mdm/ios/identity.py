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

import base64
import binascii
import hashlib
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mdm.core.errors import ServiceError
from mdm.pki.trust import ClientCertVerifier, IdentityRejected, VerifiedCertificate

SIGNATURE_HEADER = "Mdm-Signature"
CLIENT_CERT_HEADER = "Client-Cert"
CLIENT_CERT_CHAIN_HEADER = "Client-Cert-Chain"
MAX_SIGNATURE_HEADER = 64 * 1024

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_HASHLIB = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
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


class LRU:
    """A small bounded mapping with least-recently-used eviction (single event loop; no lock)."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self.size = size

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.size:
            self._data.popitem(last=False)

    def pop(self, key: Any) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


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
        self._keys = LRU(cache_size)

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
            der = _sf_binary(client_cert)
            chain = [_sf_binary(item) for item in client_cert_chain.split(",")] if client_cert_chain else []
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

    def _verify(self, der: bytes, chain_der: list[bytes] | None) -> VerifiedCertificate:
        extra: list[x509.Certificate] = []
        if chain_der and self._keys.get(hashlib.sha256(der).digest()) is None:
            try:
                extra = [x509.load_der_x509_certificate(c) for c in chain_der]
            except ValueError:
                raise IdentityError("malformed", "certificate chain is not valid DER") from None
        try:
            verified = self.verifier.verify_der(der, extra or None)
        except IdentityRejected as exc:
            raise _rejected(exc) from None
        return verified

    # ---- Mdm-Signature -----------------------------------------------------------------------
    def from_signature(self, header: str, body: bytes) -> Identity:
        if len(header) > MAX_SIGNATURE_HEADER:
            raise IdentityError("malformed", "Mdm-Signature header is too long")
        try:
            der = base64.b64decode("".join(header.split()), validate=True)
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
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            raise IdentityError("malformed", "Mdm-Signature is not CMS SignedData")
        signed = info["content"]
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise IdentityError("malformed", "Mdm-Signature must have exactly one signer")
        signer = signers[0]
        certs = [c.chosen for c in signed["certificates"] if c.name == "certificate"]
        cert = _signer_certificate(signer["sid"], certs)
        cert_der = cert.dump()
        verified = self._verify(cert_der, [c.dump() for c in certs if c is not cert])
        key = self._keys.get(verified.fingerprint)
        if key is None:
            key = verified.certificate.public_key()
            self._keys.put(verified.fingerprint, key)

        hash_name = signer["digest_algorithm"]["algorithm"].native
        if hash_name not in _HASHES:
            raise IdentityError("unsupported", f"Mdm-Signature digest {hash_name} is not supported")
        digest = _HASHLIB[hash_name](body).digest()
        attrs = signer["signed_attrs"]
        signed_at: datetime | None = None
        if len(attrs):
            message_digest = None
            for attr in attrs:
                kind = attr["type"].native
                if kind == "message_digest":
                    message_digest = attr["values"][0].native
                elif kind == "signing_time":
                    signed_at = attr["values"][0].native
            if message_digest is None or not _equal(message_digest, digest):
                raise IdentityError("bad_signature", "Mdm-Signature does not match the body (message digest)")
            # The signature covers the DER of the attributes as a SET (tag 0x31), not [0] IMPLICIT.
            to_verify = b"\x31" + attrs.dump()[1:]
        else:
            to_verify = body
        _verify_signature(
            key,
            signer["signature"].native,
            to_verify,
            hash_name,
            signer["signature_algorithm"].signature_algo,
        )
        if signed_at is not None:
            self._check_age(signed_at)
        return Identity(verified, "signature", signed_at)

    def _check_age(self, signed_at: datetime) -> None:
        age = (datetime.now(UTC) - signed_at).total_seconds()
        if age > self.signature_max_age or age < -self.signature_max_age:
            raise IdentityError(
                "replayed",
                f"Mdm-Signature signing time {signed_at.isoformat()} is outside the accepted window",
            )


def _equal(a: bytes, b: bytes) -> bool:
    import hmac

    return hmac.compare_digest(a, b)


def _signer_certificate(sid: Any, certs: list[Any]) -> Any:
    if not certs:
        raise IdentityError("malformed", "Mdm-Signature carries no certificate")
    if sid.name == "issuer_and_serial_number":
        wanted = sid.chosen
        for cert in certs:
            tbs = cert["tbs_certificate"]
            if (
                tbs["serial_number"].native == wanted["serial_number"].native
                and tbs["issuer"] == wanted["issuer"]
            ):
                return cert
    elif sid.name == "subject_key_identifier":
        ski = sid.chosen.native
        for cert in certs:
            if cert.key_identifier == ski:
                return cert
    raise IdentityError("malformed", "Mdm-Signature signer certificate is not in the message")


def _verify_signature(
    key: CertificatePublicKeyTypes, signature: bytes, data: bytes, hash_name: str, algo: str
) -> None:
    algorithm = _HASHES[hash_name]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if algo == "rsassa_pss":
                raise IdentityError("unsupported", "RSASSA-PSS signatures are not supported")
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            raise IdentityError("unsupported", "the signer's key type is not supported")
    except InvalidSignature:
        raise IdentityError("bad_signature", "Mdm-Signature does not verify") from None
    except UnsupportedAlgorithm:
        raise IdentityError("unsupported", "the signature algorithm is not supported") from None


def _sf_binary(value: str) -> bytes:
    """RFC 8941 byte sequence (``:base64:``) as RFC 9440 uses it for Client-Cert."""
    text = value.strip()
    if len(text) < 3 or text[0] != ":" or text[-1] != ":":
        raise IdentityError("malformed", f"{CLIENT_CERT_HEADER} is not an RFC 9440 byte sequence (:base64:)")
    try:
        return base64.b64decode(text[1:-1], validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError("malformed", f"{CLIENT_CERT_HEADER} is not valid base64") from None


# ---- bindings: certificate -> enrolled device --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binding:
    device_id: int
    identifier: str
    status: str
    expires: float


class BindingCache:
    """fingerprint -> Binding for ``ttl`` seconds (other replicas may rebind; the TTL bounds it)."""

    def __init__(self, size: int, ttl: float) -> None:
        self._lru = LRU(size)
        self.ttl = ttl

    def get(self, fingerprint: bytes) -> Binding | None:
        hit: Binding | None = self._lru.get(fingerprint)
        if hit is None:
            return None
        if hit.expires < time.monotonic():
            self._lru.pop(fingerprint)
            return None
        return hit

    def put(self, fingerprint: bytes, device_id: int, identifier: str, status: str) -> Binding:
        binding = Binding(device_id, identifier, status, time.monotonic() + self.ttl)
        if self.ttl > 0:
            self._lru.put(fingerprint, binding)
        return binding

    def drop(self, fingerprint: bytes | None) -> None:
        if fingerprint is not None:
            self._lru.pop(fingerprint)

    def clear(self) -> None:
        self._lru.clear()
