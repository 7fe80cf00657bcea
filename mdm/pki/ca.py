"""The internal certificate authority: a self-signed root and an issuing CA below it.

Files (DATA_DIR/ca): ``root.pem``, ``root.key``, ``issuing.pem``, ``issuing.key`` (keys 0600,
PKCS#8, encrypted when a passphrase is configured) and ``chain.pem`` (issuing, any intermediates,
root). After ``mdm certs import-ca`` the issuing CA may sit below an enterprise root: then
``root.key`` is absent and ``chain.pem`` carries the intermediates (see ``mdm.pki.castore``).
This module is pure X.509 work; recording issued certificates is the issuance service's job.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdm.pki.keys import PrivateKey, generate_key, load_key, save_key, write_public

ROOT_CERT, ROOT_KEY = "root.pem", "root.key"
ISSUING_CERT, ISSUING_KEY = "issuing.pem", "issuing.key"
CHAIN = "chain.pem"


class CAError(Exception):
    """The CA files are missing, inconsistent or unusable."""


def random_serial() -> int:
    """A positive 128-bit serial: 127 random bits under a set top bit, so every serial prints as
    32 hex digits (17 DER octets with the sign octet; RFC 5280 allows up to 20)."""
    return secrets.randbits(127) | (1 << 127)


def _sign_hash(key: PrivateKey) -> hashes.SHA256:
    return hashes.SHA256()


def _name(common_name: str, organization: str = "mdm") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    key: PrivateKey | None  # None when the subject brought its own key (CSR)

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")


class CertificateAuthority:
    def __init__(
        self,
        root: x509.Certificate,
        issuing: x509.Certificate,
        issuing_key: PrivateKey,
        crl_url: str | None = None,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> None:
        self.root = root
        self.issuing = issuing
        self.issuing_key = issuing_key
        self.crl_url = crl_url
        # CA certificates between the issuing CA and the root (imported CAs only), issuer order.
        self.intermediates = list(intermediates)

    # ---- creation / loading ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        key_type: str = "rsa",
        rsa_bits: int = 2048,
        passphrase: bytes | None = None,
        root_days: int = 3650,
        issuing_days: int = 1825,
        organization: str = "mdm",
    ) -> CertificateAuthority:
        now = datetime.now(UTC)
        root_key = generate_key("ec" if key_type == "ec" else "rsa", max(rsa_bits, 3072))
        root_name = _name(f"{organization} Root CA", organization)
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(random_serial())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=root_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, _sign_hash(root_key))
        )
        issuing_key = generate_key("ec" if key_type == "ec" else "rsa", rsa_bits)
        issuing = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{organization} Issuing CA", organization))
            .issuer_name(root_name)
            .public_key(issuing_key.public_key())
            .serial_number(random_serial())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + timedelta(days=issuing_days), root.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, _sign_hash(root_key))
        )
        directory.mkdir(parents=True, exist_ok=True)
        save_key(directory / ROOT_KEY, root_key, passphrase)
        save_key(directory / ISSUING_KEY, issuing_key, passphrase)
        write_public(directory / ROOT_CERT, _pem(root))
        write_public(directory / ISSUING_CERT, _pem(issuing))
        write_public(directory / CHAIN, _pem(issuing) + _pem(root))
        return cls(root, issuing, issuing_key)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes | None = None) -> CertificateAuthority:
        try:
            root = x509.load_pem_x509_certificate((directory / ROOT_CERT).read_bytes())
            issuing = x509.load_pem_x509_certificate((directory / ISSUING_CERT).read_bytes())
        except FileNotFoundError as exc:
            raise CAError(f"{exc.filename}: CA certificate missing (run `mdm init`)") from None
        except ValueError as exc:
            raise CAError(f"{directory}: CA certificate is not valid PEM: {exc}") from None
        key = load_key(directory / ISSUING_KEY, passphrase)
        if spki_der(key.public_key()) != spki_der(issuing.public_key()):
            raise CAError(f"{directory / ISSUING_KEY}: does not match {directory / ISSUING_CERT}")
        return cls(root, issuing, key, intermediates=_intermediates(directory / CHAIN, issuing, root))

    @staticmethod
    def exists(directory: Path) -> bool:
        return all((directory / f).exists() for f in (ROOT_CERT, ISSUING_CERT, ISSUING_KEY))

    # ---- issuance ----------------------------------------------------------------------------
    @property
    def chain(self) -> list[x509.Certificate]:
        """Issuing CA, intermediates, root: what a leaf presents after itself."""
        out = [self.issuing, *self.intermediates]
        if self.root != self.issuing:
            out.append(self.root)
        return out

    def issue(
        self,
        public_key: CertificatePublicKeyTypes,
        *,
        common_name: str,
        days: int,
        server: bool = False,
        client: bool = False,
        email_protection: bool = False,
        sans: Sequence[str] = (),
        emails: Sequence[str] = (),
        organization: str = "mdm",
        uid: str | None = None,
        serial: int | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> x509.Certificate:
        """Sign a leaf. ``not_before``/``not_after`` override the validity computed from ``days``
        (tests build expired certificates this way); the end is capped at the issuing CA's."""
        now = datetime.now(UTC)
        start = not_before or now - timedelta(minutes=5)
        end = min(not_after or now + timedelta(days=days), self.issuing.not_valid_after_utc)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
        if uid:
            attrs.append(x509.NameAttribute(NameOID.USER_ID, uid))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]))
        ekus = []
        if server:
            ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if email_protection:
            ekus.append(ExtendedKeyUsageOID.EMAIL_PROTECTION)
        is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.issuing.subject)
            .public_key(public_key)
            .serial_number(serial or random_serial())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=not is_ec,
                    data_encipherment=False,
                    key_agreement=is_ec,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuing_key.public_key()),
                critical=False,
            )
        )
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        general = san_entries(sans) + [x509.RFC822Name(e) for e in emails if e]
        if general:
            builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
        if self.crl_url:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(self.crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
        return builder.sign(self.issuing_key, _sign_hash(self.issuing_key))

    def issue_with_key(
        self, *, key_type: str = "rsa", rsa_bits: int = 2048, **kwargs: object
    ) -> IssuedCertificate:
        key = generate_key("ec" if key_type == "ec" else "rsa", rsa_bits)
        cert = self.issue(key.public_key(), **kwargs)  # type: ignore[arg-type]
        return IssuedCertificate(cert, key)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _intermediates(
    chain_file: Path, issuing: x509.Certificate, root: x509.Certificate
) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(chain_file.read_bytes())
    except (FileNotFoundError, ValueError):
        return []
    return [c for c in certs if c != issuing and c != root]


def self_signed(key: PrivateKey, name: x509.Name, days: int) -> x509.Certificate:
    """A throw-away self-signed certificate (SCEP requester identity, stand-in push certificate)."""
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_chain(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(_pem(c) for c in certs)


def spki_der(public_key: CertificatePublicKeyTypes) -> bytes:
    """SubjectPublicKeyInfo DER: compare keys of any type with this."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


__all__ = [
    "CAError",
    "CertificateAuthority",
    "IssuedCertificate",
    "pem_chain",
    "random_serial",
    "rsa",
    "spki_der",
]
