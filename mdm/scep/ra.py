"""The SCEP registration-authority certificates (RFC 8894 §2.2, §3.5.1).

Two RSA certificates issued by the issuing CA, in the layout most SCEP clients (iOS, certmonger,
NDES-era clients, PyScep) already handle:

- ``ra-sign``: digitalSignature; signs every CertRep.
- ``ra-enc``: keyEncipherment only; clients encrypt their pkcsPKIEnvelope to it.

Why not let the issuing CA do both: SCEP's key transport is RSA PKCS#1 v1.5, and a decryption
service on the CA's own key would be a Bleichenbacher oracle against the key that signs every
certificate; and the CA key may be ECDSA, which cannot do key transport at all. Separate keys
for signing and decryption keep a decryption oracle away from the signing key too. Both carry
only the id-kp-cmcRA extended key usage, so they cannot pass as device certificates.

Files: ``DATA_DIR/scep/ra-{sign,enc}.{pem,key}`` (keys 0600, encrypted with the CA passphrase if
one is configured). They are (re)made at start-up when missing, expiring within 30 days, or not
issued by the current issuing CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from mdm.pki.ca import CertificateAuthority, random_serial
from mdm.pki.keys import KeyError_, generate_key, load_key, save_key, write_public

ID_KP_CMC_RA = ObjectIdentifier("1.3.6.1.5.5.7.3.28")
RA_DIR = "scep"
RENEW_BEFORE = timedelta(days=30)
RA_VALIDITY = timedelta(days=730)


@dataclass(frozen=True)
class RaCredentials:
    sign_cert: x509.Certificate
    sign_key: rsa.RSAPrivateKey
    enc_cert: x509.Certificate
    enc_key: rsa.RSAPrivateKey
    ca_chain: tuple[x509.Certificate, ...]  # issuing CA, root

    @property
    def getcacert(self) -> list[x509.Certificate]:
        """GetCACert order: RA certificates first, then the CA chain (RFC 8894 §4.2.1.2)."""
        return [self.sign_cert, self.enc_cert, *self.ca_chain]


def _usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=not sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca: CertificateAuthority, key: rsa.RSAPrivateKey, *, sign: bool, hostname: str
) -> x509.Certificate:
    now = datetime.now(UTC)
    role = "signing" if sign else "encryption"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdm"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{hostname[:40]} SCEP RA ({role})"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.issuing.subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + RA_VALIDITY, ca.issuing.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=sign), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ID_KP_CMC_RA]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.issuing_key.public_key()), critical=False
        )
        .sign(ca.issuing_key, hashes.SHA256())
    )


def _usable(cert: x509.Certificate, key: rsa.RSAPrivateKey, ca: CertificateAuthority) -> bool:
    now = datetime.now(UTC)
    if cert.issuer != ca.issuing.subject or cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        return False
    try:
        cert.verify_directly_issued_by(ca.issuing)
    except (InvalidSignature, ValueError, TypeError):  # signed by another key: not ours any more
        return False
    return True


def _load_or_make(
    directory: Path,
    name: str,
    ca: CertificateAuthority,
    passphrase: bytes | None,
    *,
    sign: bool,
    hostname: str,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        try:
            key = load_key(key_path, passphrase)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if isinstance(key, rsa.RSAPrivateKey) and _usable(cert, key, ca):
                return cert, key
        except (KeyError_, ValueError):
            pass  # unreadable or stale: replace below
    new_key = generate_key("rsa", 2048)
    assert isinstance(new_key, rsa.RSAPrivateKey)
    cert = _issue(ca, new_key, sign=sign, hostname=hostname)
    save_key(key_path, new_key, passphrase)
    write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, new_key


def ensure(
    data_dir: Path, ca: CertificateAuthority, passphrase: bytes | None, hostname: str
) -> RaCredentials:
    """Load the RA certificates, making or renewing them if needed (blocking: RSA key generation)."""
    directory = data_dir / RA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    sign_cert, sign_key = _load_or_make(directory, "ra-sign", ca, passphrase, sign=True, hostname=hostname)
    enc_cert, enc_key = _load_or_make(directory, "ra-enc", ca, passphrase, sign=False, hostname=hostname)
    return RaCredentials(sign_cert, sign_key, enc_cert, enc_key, (ca.issuing, ca.root))
