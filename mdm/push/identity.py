"""The MDM push identity: Apple's push certificate and its private key, read, checked and written.

``read_bundle`` takes what an administrator has (a PKCS#12 file, or PEM with the certificate and
the key, the key possibly encrypted) and ``check`` says in one sentence what is wrong with it: no
key, a key of another certificate, a wrong or missing password, not a certificate, no subject UID
(not an MDM push certificate), expired. ``load_identity`` builds the ``ApnsIdentity`` the APNs
client uses from ``[apns] certificate_file`` / ``key_file``; ``apply_identity`` decides, on
``mdm reload``, whether a renewed certificate replaces the running one (same topic only: another
topic would cut every enrolled device off).

Never put a key or a password in a message: the messages name files and topics only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from mdm.config import Config
from mdm.core import events
from mdm.db.engine import Database
from mdm.pki.keys import write_private
from mdm.push.config import apns_config
from mdm.push.event_types import PUSH_CERTIFICATE_REFUSED, PUSH_CERTIFICATE_REPLACED
from mdm.push.topic import TopicError, is_development, topic_of
from mdm.push.types import ApnsIdentity

log = logging.getLogger("mdm.push")

PushKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
# Where `mdm push apns set-cert` puts the identity (relative to the data directory).
CERT_FILE = "apns/push.pem"
KEY_FILE = "apns/push.key"
RE_ENROLL = "every enrolled iOS device would have to re-enroll"


class IdentityError(TopicError):
    """The push certificate or key cannot be used; the message says why (no secret in it)."""


@dataclass(frozen=True)
class Bundle:
    cert: x509.Certificate
    key: PushKey
    chain: tuple[x509.Certificate, ...] = ()


def read_bundle(data: bytes, password: bytes | None, *, name: str = "the file") -> Bundle:
    """The certificate and key in ``data``: PKCS#12 (DER), or PEM certificate(s) and a private key
    (encrypted with ``password`` or not). The certificate is the one that goes with the key."""
    if b"-----BEGIN" in data:
        return _read_pem(data, password, name)
    return _read_pkcs12(data, password, name)


def _read_pkcs12(data: bytes, password: bytes | None, name: str) -> Bundle:
    try:
        p12 = pkcs12.load_pkcs12(data, password)
    except ValueError:
        if password is None:
            try:  # an empty password is common for exported .p12 files
                p12 = pkcs12.load_pkcs12(data, b"")
            except ValueError:
                raise IdentityError(
                    f"{name}: neither PEM nor a PKCS#12 file this program can open without a password "
                    "(pass --password or --password-file if it has one)"
                ) from None
        else:
            raise IdentityError(f"{name}: wrong password, or not a PKCS#12 file") from None
    if p12.cert is None:
        raise IdentityError(f"{name}: the PKCS#12 file holds no certificate")
    if p12.key is None:
        raise IdentityError(f"{name}: the PKCS#12 file holds no private key; export the certificate "
                            "together with its key")
    key = _push_key(p12.key, name)
    return Bundle(p12.cert.certificate, key, tuple(c.certificate for c in p12.additional_certs))


def _pem_blocks(data: bytes, kind: bytes) -> list[bytes]:
    blocks: list[bytes] = []
    for part in data.split(b"-----BEGIN ")[1:]:
        label = part.split(b"-----", 1)[0]
        if kind in label:
            end = part.find(b"-----END ")
            tail = part.find(b"-----", end + 9) + 5 if end >= 0 else len(part)
            blocks.append(b"-----BEGIN " + part[:tail] + b"\n")
    return blocks


def _read_pem(data: bytes, password: bytes | None, name: str) -> Bundle:
    try:
        certs = x509.load_pem_x509_certificates(data) if b"CERTIFICATE-----" in data else []
    except ValueError:
        raise IdentityError(f"{name}: a certificate in it cannot be read (damaged PEM?)") from None
    keys = _pem_blocks(data, b"PRIVATE KEY")
    if not certs:
        raise IdentityError(f"{name}: holds no certificate (expected the MDM push certificate, "
                            "PEM or PKCS#12)")
    if not keys:
        raise IdentityError(f"{name}: holds no private key; give the key too (in the same file, or "
                            "with --key FILE: the key written by `mdm push apns csr`)")
    if len(keys) > 1:
        raise IdentityError(f"{name}: holds {len(keys)} private keys; give exactly one")
    encrypted = b"ENCRYPTED" in keys[0].split(b"\n", 1)[0] or b"Proc-Type: 4,ENCRYPTED" in keys[0]
    try:
        loaded = serialization.load_pem_private_key(keys[0], password if encrypted else None)
    except TypeError:
        raise IdentityError(f"{name}: the private key is encrypted; pass its password "
                            "(--password or --password-file)") from None
    except ValueError:
        hint = "wrong password" if encrypted else "damaged or unsupported key"
        raise IdentityError(f"{name}: cannot read the private key ({hint})") from None
    key = _push_key(loaded, name)
    mine = [c for c in certs if _matches(c, key)]
    if not mine:
        raise IdentityError(f"{name}: the private key does not belong to the certificate "
                            f"({_subject(certs[0])}); use the key the CSR was made with")
    return Bundle(mine[0], key, tuple(c for c in certs if c is not mine[0]))


def _push_key(key: Any, name: str) -> PushKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{name}: unsupported key type {type(key).__name__} (RSA or EC expected)")
    return key


def _matches(cert: x509.Certificate, key: PushKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki))


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def check(
    bundle: Bundle, now: datetime, *, name: str = "the certificate", allow_expired: bool = False
) -> str:
    """The bundle's topic, or IdentityError: key mismatch, no UID (not an MDM push certificate),
    expired (unless ``allow_expired``: a configured certificate is loaded and reported expired)."""
    if not _matches(bundle.cert, bundle.key):
        raise IdentityError(f"{name}: the private key does not belong to the certificate "
                            f"({_subject(bundle.cert)})")
    try:
        topic = topic_of(bundle.cert)
    except TopicError as exc:
        raise IdentityError(f"{name}: {exc}") from None
    if not allow_expired and bundle.cert.not_valid_after_utc <= now:
        raise IdentityError(f"{name}: the certificate (topic {topic}) expired on "
                            f"{bundle.cert.not_valid_after_utc:%Y-%m-%d}; renew it at "
                            "https://identity.apple.com/pushcert (same topic) and install the new one")
    if bundle.cert.not_valid_before_utc > now:
        raise IdentityError(f"{name}: the certificate (topic {topic}) is not valid before "
                            f"{bundle.cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                            "(check this host's clock)")
    return topic


def identity_of(bundle: Bundle, topic: str) -> ApnsIdentity:
    key_pem = bundle.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    return ApnsIdentity(
        cert_pem=bundle.cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key_pem,
        topic=topic,
        not_after=bundle.cert.not_valid_after_utc,
        development=is_development(bundle.cert),
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{what}: cannot read {path}: {exc.strerror}") from None


def load_identity(config: Config, now: datetime | None = None) -> ApnsIdentity:
    """The configured push identity: ``apns.certificate_file`` (PEM, or PKCS#12 without a
    password) with its key from ``apns.key_file``, from the certificate file itself, or from the
    ``.key`` file next to it (the layout of `mdm init`'s development identity). Relative paths are
    under the data directory. An expired certificate is loaded (``not_after`` tells)."""
    section = apns_config(config)
    if not section.certificate_file:
        raise IdentityError("apns.certificate_file is not set: install the MDM push certificate with "
                            "`mdm push apns set-cert FILE`")
    cert_path = config.resolve(section.certificate_file)
    data = _read(cert_path, "apns.certificate_file")
    if section.key_file:
        data = data.rstrip(b"\n") + b"\n" + _read(config.resolve(section.key_file), "apns.key_file")
    elif b"-----BEGIN" in data and b"PRIVATE KEY-----" not in data:
        sibling = cert_path.with_suffix(".key")
        if not sibling.exists():
            raise IdentityError(f"apns.certificate_file: {cert_path} holds no private key; set apns.key_file "
                                "(or install both with `mdm push apns set-cert FILE --key KEY`)")
        data = data.rstrip(b"\n") + b"\n" + _read(sibling, "apns key")
    bundle = read_bundle(data, None, name=str(cert_path))
    topic = check(bundle, now or datetime.now(UTC), name=str(cert_path), allow_expired=True)
    return identity_of(bundle, topic)


def write_identity(data_dir: Path, bundle: Bundle) -> tuple[str, str]:
    """Write the certificate (with its chain) and the unencrypted key, both mode 0600 and
    atomically replaced, below ``data_dir``; returns the (certificate_file, key_file) values."""
    directory = data_dir / Path(CERT_FILE).parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (bundle.cert, *bundle.chain))
    key = bundle.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    write_private(data_dir / KEY_FILE, key)
    write_private(data_dir / CERT_FILE, pem)
    return CERT_FILE, KEY_FILE


def topic_change_message(new: str, configured: str) -> str:
    return (f"the topic {new} differs from the configured {configured}: {RE_ENROLL}; "
            "pass --new-topic if that is intended")


async def apply_identity(
    current: ApnsIdentity | None, config: Config, db: Database | None = None
) -> ApnsIdentity | None:
    """On ``mdm reload``: the identity to use from now on. A renewed certificate with the same
    topic (or the first one) is returned, for the caller to hand to ``ApnsClient.replace_identity``
    and report with ``record_replaced``; one with another topic, or one that cannot be loaded, is
    refused (error log, PUSH_CERTIFICATE_REFUSED when ``db`` is given) and ``current`` is kept."""
    import asyncio

    try:
        new = await asyncio.to_thread(load_identity, config)
    except TopicError as exc:
        await _refuse(db, str(exc), None, current)
        return current
    if current is None:
        return new
    if new.cert_pem == current.cert_pem and new.key_pem == current.key_pem:
        return current  # unchanged: nothing to replace
    if new.topic != current.topic and not current.development:
        # (the self-signed development identity cannot wake anything: Apple's replaces it at once)
        await _refuse(db, f"the new push certificate's topic {new.topic} differs from the running one's "
                          f"{current.topic}: {RE_ENROLL}; kept the running certificate (to change the "
                          "topic on purpose: `mdm push apns set-cert FILE --new-topic`, then restart)",
                      new.topic, current)
        return current
    return new


async def _refuse(db: Database | None, reason: str, topic: str | None, current: ApnsIdentity | None) -> None:
    log.error("push certificate refused: %s", reason)
    if db is None:
        return
    async with db.transaction() as session:
        events.emit(session, PUSH_CERTIFICATE_REFUSED, reason=reason, topic=topic,
                    configured_topic=current.topic if current else None)


async def record_replaced(
    db: Database, old: ApnsIdentity | None, new: ApnsIdentity, by: str | None = None
) -> None:
    """Log and emit PUSH_CERTIFICATE_REPLACED once the client uses ``new``."""
    log.info("push certificate replaced: topic %s, now valid until %s", new.topic,
             f"{new.not_after:%Y-%m-%d}")
    async with db.transaction() as session:
        events.emit(session, PUSH_CERTIFICATE_REPLACED, topic=new.topic,
                    old_not_after=old.not_after.isoformat() if old else None,
                    new_not_after=new.not_after.isoformat(), by=by)


def certificate_status(identity: ApnsIdentity | None, now: datetime, environment: str = "") -> dict[str, Any]:
    """What ``GET /api/v1/push/status`` shows under "certificate"."""
    if identity is None:
        return {"configured": False}
    left = identity.not_after - now
    return {
        "configured": True,
        "topic": identity.topic,
        "not_after": identity.not_after.isoformat(),
        "days_left": left.days if left.total_seconds() > 0 else 0,
        "expired": left.total_seconds() <= 0,
        "development": identity.development,
        "environment": environment,
    }
