"""Checks on certificates brought from outside (server-certificate replacement, CA import):
key strength, key/certificate match, validity, usage, host-name coverage, and chain building up
to a self-signed root. Each failure is a ``CertInputError`` with a message an administrator can
act on."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from mdm.pki.ca import spki_der
from mdm.pki.keys import PrivateKey

MAX_CHAIN = 8


class CertInputError(Exception):
    """A certificate, key or container that cannot be used; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CertSummary:
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    fingerprint: str  # SHA-256 of the DER, lower-case hex

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertSummary:
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=format(cert.serial_number, "x"),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            fingerprint=fingerprint(cert),
        )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the DER, lower-case hex without separators (the pin format)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def name_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def check_key_strength(public_key: CertificatePublicKeyTypes, what: str) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise CertInputError(
                "weak_key", f"{what}: RSA key of {public_key.key_size} bits is too weak (at least 2048 bits)"
            )
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1):
            curve = public_key.curve.name
            raise CertInputError("weak_key", f"{what}: EC curve {curve} is not accepted (P-256)")
        return
    kind = type(public_key).__name__
    raise CertInputError("weak_key", f"{what}: {kind} keys are not accepted (RSA or P-256)")


def check_key_matches(cert: x509.Certificate, key: PrivateKey) -> None:
    if spki_der(cert.public_key()) != spki_der(key.public_key()):
        raise CertInputError(
            "key_mismatch", f"the private key does not belong to the certificate {name_of(cert)}"
        )


def check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if cert.not_valid_after_utc <= now:
        raise CertInputError(
            "expired", f"{what} {name_of(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
        )
    if cert.not_valid_before_utc > now:
        raise CertInputError(
            "not_yet_valid",
            f"{what} {name_of(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z",
        )


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_server_usage(cert: x509.Certificate) -> None:
    if is_ca(cert):
        raise CertInputError("wrong_usage", f"{name_of(cert)} is a CA certificate, not a server certificate")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertInputError(
            "wrong_eku",
            f"{name_of(cert)} has no extended key usage; a server certificate needs serverAuth "
            "(1.3.6.1.5.5.7.3.1) - Apple devices refuse it otherwise",
        ) from None
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        names = ", ".join(getattr(u, "_name", None) or u.dotted_string for u in usages) or "none"
        raise CertInputError(
            "wrong_eku",
            f"{name_of(cert)} is not valid for TLS servers: extended key usage is {names}, "
            "serverAuth is required",
        )


def san_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*san.get_values_for_type(x509.DNSName), *ips]


def san_covers(cert: x509.Certificate, host: str) -> bool:
    """Whether the SAN covers ``host`` (RFC 6125: exact name, or a wildcard in the left-most label)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return address in san.get_values_for_type(x509.IPAddress)
    wanted = host.lower().rstrip(".")
    for name in san.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == wanted:
            return True
        if name.startswith("*.") and "." in wanted:
            label, rest = wanted.split(".", 1)
            if label and rest == name[2:] and "." in rest:
                return True
    return False


def check_san(cert: x509.Certificate, host: str) -> None:
    if not san_covers(cert, host):
        names = ", ".join(san_names(cert)) or "no subjectAltName at all"
        raise CertInputError(
            "name_mismatch",
            f"{name_of(cert)} does not cover the host name {host!r} (config key hostname); it names: {names}",
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return _issued_by(cert, cert)


def build_chain(
    leaf: x509.Certificate,
    pool: Iterable[x509.Certificate],
    now: datetime,
    *,
    anchors: Iterable[x509.Certificate] = (),
) -> list[x509.Certificate]:
    """``leaf`` followed by its issuers up to a self-signed root, taken from ``pool`` (what the
    container holds) or ``anchors`` (our own CA certificates). Every link's signature is checked."""
    candidates = [c for c in [*pool, *anchors] if c != leaf]
    chain = [leaf]
    current = leaf
    while not is_self_signed(current):
        issuer = next((c for c in candidates if c not in chain and _issued_by(current, c)), None)
        if issuer is None:
            raise CertInputError(
                "no_chain",
                f"the chain is incomplete: the issuer of {name_of(current)} "
                f"({current.issuer.rfc4514_string()}) is not included; export the container with the "
                "whole chain up to the root CA",
            )
        if not is_ca(issuer):
            raise CertInputError("no_chain", f"{name_of(issuer)} issued {name_of(current)} but is not a CA")
        check_validity(issuer, now, "chain certificate")
        chain.append(issuer)
        if len(chain) > MAX_CHAIN:
            raise CertInputError("no_chain", f"the chain is longer than {MAX_CHAIN} certificates")
        current = issuer
    return chain
