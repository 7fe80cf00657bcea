"""Test certificates for the APNs fake: a "push CA" standing in for Apple's, MDM push client
certificates with the topic as subject UID, and a gateway server CA + certificate for localhost."""

from __future__ import annotations

import ipaddress
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdm.push.types import ApnsIdentity

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _build(subject: x509.Name, key: Key, issuer: Issued | None, *, ca: bool, days: float,
           extensions: list[tuple[x509.ExtensionType, bool]]) -> Issued:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(cert, key)


def make_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    return _build(name, key, None, ca=True, days=3650, extensions=[(usage, True)])


def push_certificate(ca: Issued, topic: str | None = None, *, days: float = 365) -> Issued:
    """An MDM push client certificate (subject UID = topic) issued by the test push CA."""
    topic = topic or f"com.apple.mgmt.External.{uuid.uuid4()}"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.USER_ID, topic),
        x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic}"[:64]),
    ])
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    return _build(name, key, ca, ca=False, days=days, extensions=[(eku, False)])


def server_certificate(ca: Issued, host: str = "localhost") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    sans: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    return _build(name, key, ca, ca=False, days=365,
                  extensions=[(x509.SubjectAlternativeName(sans), False), (eku, False)])


def identity(issued: Issued) -> ApnsIdentity:
    topic = str(issued.cert.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value)
    return ApnsIdentity(issued.cert_pem, issued.key_pem, topic, issued.cert.not_valid_after_utc)


@dataclass(frozen=True)
class FakeCerts:
    """The files the fake and its clients need, in one directory."""

    directory: Path
    push_ca: Path  # the fake trusts client certificates issued by it
    server_ca: Path  # clients verify the fake against it (apns.ca_file)
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_fake_certs(directory: Path, topic: str | None = None) -> FakeCerts:
    """A push CA, a client push certificate, a server CA and a localhost server certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    push_ca = make_ca("mdm test push CA (not Apple)")
    server_ca = make_ca("mdm test APNs gateway CA")
    server = server_certificate(server_ca)
    client = push_certificate(push_ca, topic)
    files = FakeCerts(directory, directory / "push-ca.pem", directory / "server-ca.pem",
                      directory / "server.pem", directory / "server.key",
                      directory / "client.pem", directory / "client.key")
    files.push_ca.write_bytes(push_ca.cert_pem)
    files.server_ca.write_bytes(server_ca.cert_pem)
    files.server_cert.write_bytes(server.cert_pem)
    files.client_cert.write_bytes(client.cert_pem)
    for path, data in ((files.server_key, server.key_pem), (files.client_key, client.key_pem)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return files


def identity_from_files(cert: Path, key: Path) -> ApnsIdentity:
    """The push identity from a client certificate and key written by ``write_fake_certs``."""
    cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    parsed = x509.load_pem_x509_certificate(cert_pem)
    topic = str(parsed.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value)
    return ApnsIdentity(cert_pem, key_pem, topic, parsed.not_valid_after_utc)
