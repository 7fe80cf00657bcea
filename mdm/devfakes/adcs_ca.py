"""The AD CS fake's own test PKI: a root CA and an issuing CA (RSA 2048, as a Windows enterprise
CA), the TLS certificate of the web-enrollment server, the certificates the fake issues, and
Enrollment Agent certificates (with variants: expired, without the Certificate Request Agent EKU)
for the tests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import core as asn1core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

CERTIFICATE_REQUEST_AGENT = ObjectIdentifier("1.3.6.1.4.1.311.20.2.1")
UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # szOID_NT_PRINCIPAL_NAME (otherName)
EKUS = {
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "certificateRequestAgent": CERTIFICATE_REQUEST_AGENT,
}


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(common_name: str, domain: str = "") -> x509.Name:
    parts = [x509.NameAttribute(NameOID.DOMAIN_COMPONENT, dc) for dc in reversed(domain.split(".")) if dc]
    return x509.Name([*parts, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(subject: x509.Name, issuer: KeyPair | None) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0),
                       critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(ski, critical=False)
    )
    signer = issuer or KeyPair(cert=None, key=key)  # type: ignore[arg-type]  # self-signed root
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),  # type: ignore[arg-type]
            critical=False)
    return KeyPair(builder.sign(signer.key, hashes.SHA256()), key)


class TestPki:
    """Root → issuing CA of the fake's domain; every certificate the fake hands out."""

    __test__ = False  # not a pytest class

    def __init__(self, domain: str = "corp.example.com", ca_name: str = "CORP-ISSUING-CA") -> None:
        self.domain = domain
        self.root = _ca(_name("CORP-ROOT-CA", domain), None)
        self.issuing = _ca(_name(ca_name, domain), self.root)

    @property
    def chain(self) -> list[x509.Certificate]:
        """Issuing CA first, then the root."""
        return [self.issuing.cert, self.root.cert]

    def server_tls(self, host: str = "localhost") -> KeyPair:
        """The web-enrollment server's TLS certificate (EC: quick to make; issued by the root)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"),
                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        return self._leaf(_name(host), key.public_key(), self.root, days=30,
                          ekus=[ExtendedKeyUsageOID.SERVER_AUTH], sans=sans, key=key)

    def issue(self, subject: x509.Name, public_key: x509.Certificate | object, *, days: float,
              ekus: list[ObjectIdentifier], upn: str | None = None) -> x509.Certificate:
        """A certificate of the issuing CA for a request's public key."""
        sans: list[x509.GeneralName] = []
        if upn:
            sans.append(x509.OtherName(UPN, asn1core.UTF8String(upn).dump()))
        return self._leaf(subject, public_key, self.issuing, days=days, ekus=ekus, sans=sans).cert

    def enrollment_agent(self, user: str = "mdm-ea", *, expired: bool = False,
                         with_eku: bool = True, issuer: KeyPair | None = None) -> KeyPair:
        """An Enrollment Agent certificate + key (RSA 2048) of the issuing CA (or ``issuer``):
        the Certificate Request Agent EKU unless ``with_eku`` is false, expired if asked."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ekus = [CERTIFICATE_REQUEST_AGENT] if with_eku else [ExtendedKeyUsageOID.CLIENT_AUTH]
        return self._leaf(_name(user), key.public_key(), issuer or self.issuing,
                          days=-1 if expired else 365, ekus=ekus, sans=[], key=key)

    def _leaf(self, subject: x509.Name, public_key: object, issuer: KeyPair, *, days: float,
              ekus: list[ObjectIdentifier], sans: list[x509.GeneralName],
              key: CertificateIssuerPrivateKeyTypes | None = None) -> KeyPair:
        now = datetime.now(UTC)
        start = now - timedelta(hours=1) if days > 0 else now - timedelta(days=30)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.cert.public_key()), critical=False)  # type: ignore[arg-type]
        )
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(issuer.key, hashes.SHA256())
        return KeyPair(cert, key)  # type: ignore[arg-type]  # no key for request-issued certs

