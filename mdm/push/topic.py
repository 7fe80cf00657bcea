"""The MDM push topic: the subject UID of the configured APNs certificate.

Until Apple's MDM push certificate is installed, ``mdm init`` configures a self-signed
**development push identity** with a topic of the same form: devices (and ``mdm sim ios``) enroll
and take commands when they poll, but nothing can wake a real device. A self-signed certificate
is never Apple's, so that is how the service tells the two apart.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mdm.config import Config
from mdm.push.config import apns_config
from mdm.server.context import ServerContext

# The logger operators already filter on: the push identity is reported as enrollment readiness.
log = logging.getLogger("mdm.enroll")

TOPIC_PREFIX = "com.apple.mgmt."
DEVELOPMENT_CN = "mdm DEVELOPMENT push identity (not Apple: cannot wake devices)"  # CN: 64 chars max
# Relative to the data directory (apns.certificate_file accepts relative paths).
DEVELOPMENT_CERT = "apns/development-push.pem"
DEVELOPMENT_KEY = "apns/development-push.key"
DEVELOPMENT_WARNING = (
    "apns.certificate_file is the self-signed DEVELOPMENT push identity made by `mdm init`, not Apple's "
    "MDM push certificate: simulated devices (`mdm sim ios`) work, real iPhones and iPads will enroll but "
    "cannot be woken by push, so their commands wait until the device contacts the server on its own. "
    "To get Apple's certificate: `mdm push apns csr --out push.csr`, have the CSR signed through an MDM "
    "vendor, upload the signed request at https://identity.apple.com/pushcert, then install the "
    "certificate with `mdm push apns set-cert FILE` (or point apns.certificate_file at it and run "
    "`mdm reload`); see the README, \"Try it without an Apple certificate\""
)

# The same, as steps (mdm init prints them).
DEVELOPMENT_HOWTO = (
    "WARNING: iOS push uses a self-signed DEVELOPMENT identity (apns.certificate_file), not",
    "Apple's MDM push certificate. Simulated devices (`mdm sim ios`) work; real iPhones and iPads",
    "enroll but cannot be woken by push: their commands wait until the device contacts the",
    "server on its own. To get Apple's certificate:",
    "  1. mdm push apns csr --out push.csr        (also writes push.key, mode 0600)",
    "  2. have push.csr signed through an MDM vendor (README: \"Try it without an Apple certificate\")",
    "  3. upload the signed request at https://identity.apple.com/pushcert; download the certificate",
    "  4. mdm push apns set-cert FILE  (or set apns.certificate_file to it and run `mdm reload`)",
)


class TopicError(Exception):
    """No usable APNs certificate is configured; the message tells the administrator what to fix."""


@dataclass(frozen=True)
class PushTopic:
    topic: str
    not_after: datetime
    # The development identity (self-signed): nothing can push to devices with it.
    development: bool = False

    @property
    def expired(self) -> bool:
        return self.not_after <= datetime.now(UTC)


def topic_of(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not values:
        raise TopicError("the APNs certificate has no UID in its subject; is it an MDM push certificate?")
    topic = str(values[0].value)
    if not topic.startswith(TOPIC_PREFIX):
        raise TopicError(
            f"the APNs certificate's topic {topic!r} does not start with {TOPIC_PREFIX!r}; "
            "use the MDM push certificate from identity.apple.com/pushcert"
        )
    return topic


def is_development(cert: x509.Certificate) -> bool:
    """Apple issues MDM push certificates from its own CA; a self-signed one is never Apple's."""
    return cert.issuer == cert.subject


def read_topic(config: Config) -> PushTopic:
    path_text = apns_config(config).certificate_file
    if not path_text:
        raise TopicError(
            "configure apns.certificate_file (the MDM push certificate, PEM): "
            "its topic goes into every enrollment profile; `mdm init` makes a development push "
            "identity to try the service with"
        )
    path = config.resolve(path_text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TopicError(f"apns.certificate_file: cannot read {path}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError:
            raise TopicError(f"apns.certificate_file: {path} is not a PEM or DER certificate") from None
    return PushTopic(topic_of(cert), cert.not_valid_after_utc, is_development(cert))


def create_development_identity(data_dir: Path, days: int = 3650) -> tuple[str, str]:
    """Write the development push identity (certificate, key 0600 in a 0700 directory) below
    ``data_dir``; returns (apns.certificate_file value, topic)."""
    from mdm.pki.ca import self_signed
    from mdm.pki.keys import generate_key, save_key, write_public

    topic = f"{TOPIC_PREFIX}External.{uuid.uuid4()}"
    key = generate_key("rsa", 2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.USER_ID, topic),
        x509.NameAttribute(NameOID.COMMON_NAME, DEVELOPMENT_CN),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdm development (self-signed)"),
    ])
    cert = self_signed(key, name, days)
    directory = data_dir / Path(DEVELOPMENT_CERT).parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    save_key(data_dir / DEVELOPMENT_KEY, key)
    write_public(data_dir / DEVELOPMENT_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return DEVELOPMENT_CERT, topic


def describe(config: Config) -> tuple[int, str]:
    """(log level, message) about the configured push identity, for start-up and reloads."""
    try:
        topic = read_topic(config)
    except TopicError as exc:
        return logging.WARNING, f"iOS devices cannot be enrolled yet: {exc}"
    if topic.development:
        return logging.WARNING, f"push topic {topic.topic}: {DEVELOPMENT_WARNING}"
    if topic.expired:
        return logging.WARNING, (
            f"the APNs certificate (topic {topic.topic}) expired on {topic.not_after:%Y-%m-%d}: devices "
            "cannot be woken by push until it is renewed"
        )
    return logging.INFO, f"APNs push topic {topic.topic}, certificate valid until {topic.not_after:%Y-%m-%d}"


async def log_push_identity(ctx: ServerContext) -> None:
    level, message = await asyncio.to_thread(describe, ctx.config)
    log.log(level, message)
