"""The MDM push topic: the subject UID of the configured APNs certificate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from mdm.config import Config
from mdm.enroll.config import apns_config

TOPIC_PREFIX = "com.apple.mgmt."


class TopicError(Exception):
    """No usable APNs certificate is configured; the message tells the administrator what to fix."""


@dataclass(frozen=True)
class PushTopic:
    topic: str
    not_after: datetime

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


def read_topic(config: Config) -> PushTopic:
    path_text = apns_config(config).certificate_file
    if not path_text:
        raise TopicError(
            "configure apns.certificate_file (the MDM push certificate, PEM): "
            "its topic goes into every enrollment profile"
        )
    path = Path(path_text)
    if not path.is_absolute():
        path = config.data_path / path
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
    return PushTopic(topic_of(cert), cert.not_valid_after_utc)
