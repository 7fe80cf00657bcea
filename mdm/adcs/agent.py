"""The Enrollment Agent identity: ``DATA_DIR/adcs/agent.pem`` (the certificate) and ``agent.key``
(PKCS#8, ENCRYPTED with the agent passphrase), directory 0700, files 0600.

The certificate is checked on import and at every load: the Certificate Request Agent EKU
(``1.3.6.1.4.1.311.20.2.1``), within its validity, the key its own. A certificate that expires
within 30 days is logged as a warning at every load. There is no way to store the key in clear.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ObjectIdentifier

from mdm.pki.keys import PrivateKey

log = logging.getLogger(__name__)

CERTIFICATE_REQUEST_AGENT = ObjectIdentifier("1.3.6.1.4.1.311.20.2.1")
EXPIRY_WARNING = timedelta(days=30)
CERT_FILE = "agent.pem"
KEY_FILE = "agent.key"


class AgentError(Exception):
    """The Enrollment Agent identity is missing, unreadable or unfit (the message says which)."""


@dataclass(frozen=True)
class AgentIdentity:
    certificate: x509.Certificate
    key: PrivateKey

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


def agent_dir(data_dir: Path) -> Path:
    return data_dir / "adcs"


def check(cert: x509.Certificate, key: PrivateKey, now: datetime | None = None) -> None:
    """Raise AgentError unless ``cert`` is a valid Enrollment Agent certificate for ``key``."""
    now = now or datetime.now(UTC)
    subject = cert.subject.rfc4514_string()
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        ekus = None
    if ekus is None or CERTIFICATE_REQUEST_AGENT not in ekus:
        raise AgentError(f"{subject} is no Enrollment Agent certificate: it lacks the Certificate "
                         f"Request Agent EKU {CERTIFICATE_REQUEST_AGENT.dotted_string}")
    if now < cert.not_valid_before_utc:
        raise AgentError(f"the Enrollment Agent certificate {subject} is not valid before "
                         f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now >= cert.not_valid_after_utc:
        raise AgentError(f"the Enrollment Agent certificate {subject} expired on "
                         f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise AgentError(f"the key does not belong to the Enrollment Agent certificate {subject}")


def _private_key(key: object) -> PrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise AgentError(f"{type(key).__name__} keys are not supported for the Enrollment Agent (RSA or EC)")
    return key


def read_pkcs12(data: bytes, password: bytes | None) -> AgentIdentity:
    """The certificate and key of a PKCS#12 file (as exported from the Windows certificate store)."""
    try:
        key, cert, _extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        raise AgentError("cannot read the PKCS#12 file: wrong password or not a PKCS#12 file") from None
    if key is None or cert is None:
        raise AgentError("the PKCS#12 file must hold the Enrollment Agent certificate and its private key")
    return AgentIdentity(cert, _private_key(key))


def store(data_dir: Path, identity: AgentIdentity, passphrase: bytes | None,
          now: datetime | None = None) -> Path:
    """Check and write the identity (key encrypted with ``passphrase``); the directory written."""
    if not passphrase:
        raise AgentError("refusing to store the Enrollment Agent key without a passphrase: set [adcs] "
                         "agent_passphrase_file (or [pki] passphrase_file)")
    check(identity.certificate, identity.key, now)
    folder = agent_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key_pem = identity.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(passphrase))
    _write(folder / KEY_FILE, key_pem)
    _write(folder / CERT_FILE, identity.certificate.public_bytes(serialization.Encoding.PEM))
    log.info("adcs: Enrollment Agent %s stored (valid until %s)", identity.subject,
             identity.not_after.isoformat())
    return folder


def _write(path: Path, data: bytes) -> None:
    """Atomically, created 0600 (never readable by others, not even for a moment)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def load(data_dir: Path, passphrase: bytes | None, now: datetime | None = None) -> AgentIdentity:
    """The stored identity, checked; a warning when it expires within 30 days."""
    now = now or datetime.now(UTC)
    folder = agent_dir(data_dir)
    try:
        cert_pem = (folder / CERT_FILE).read_bytes()
        key_pem = (folder / KEY_FILE).read_bytes()
    except FileNotFoundError:
        raise AgentError(
            f"no Enrollment Agent certificate in {folder}: run `mdm adcs agent import`") from None
    except OSError as exc:
        raise AgentError(f"cannot read the Enrollment Agent files in {folder}: {exc.strerror}") from None
    if not passphrase:
        raise AgentError("no passphrase for the Enrollment Agent key: set [adcs] agent_passphrase_file "
                         "(or [pki] passphrase_file)")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise AgentError(f"{folder / CERT_FILE} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, passphrase)
    except (ValueError, TypeError):
        raise AgentError(
            f"cannot decrypt {folder / KEY_FILE}: wrong passphrase or not an encrypted key") from None
    identity = AgentIdentity(cert, _private_key(key))
    check(cert, identity.key, now)
    if identity.not_after - now < EXPIRY_WARNING:
        log.warning("adcs: the Enrollment Agent certificate %s expires on %s: renew it and run "
                    "`mdm adcs agent import`", identity.subject, identity.not_after.isoformat())
    return identity


def passphrase(agent_passphrase_file: str, ca_passphrase: bytes | None) -> bytes | None:
    """The agent key's passphrase: ``agent_passphrase_file`` if set, else the CA passphrase."""
    if not agent_passphrase_file:
        return ca_passphrase
    try:
        text = Path(agent_passphrase_file).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise AgentError(f"[adcs] agent_passphrase_file {agent_passphrase_file}: {exc.strerror}") from None
    return text or None
