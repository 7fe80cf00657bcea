"""The event types of push (APNs, FCM, the dispatcher). Declared once; ``events.emit`` takes
these values. Fields a call site does not know are left out (their defaults)."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class PushTokenInvalid(EventBody):
    service: str  # "apns" | "fcm"
    reason: str  # the server's: BadDeviceToken, Unregistered, UNREGISTERED, ...
    status: int | None = None


class PushCredentialsRefused(EventBody):
    service: str
    reason: str
    status: int | None = None
    topic: str | None = None


class PushCertificateExpiring(EventBody):
    topic: str
    not_after: str
    days_left: int


class PushCertificateExpired(EventBody):
    topic: str
    not_after: str


class PushCertificateReplaced(EventBody):
    topic: str
    old_not_after: str | None = None
    new_not_after: str
    by: str | None = None


class PushCertificateRefused(EventBody):
    reason: str
    topic: str | None = None
    configured_topic: str | None = None


PUSH_TOKEN_INVALID = EventType(
    "push_token_invalid", Severity.WARNING, PushTokenInvalid,
    "The push service refused the device's token for good; the device is not pushed again until it "
    "sends a newer one (iOS TokenUpdate)",
)
PUSH_CREDENTIALS_REFUSED = EventType(
    "push_credentials_refused", Severity.CRITICAL, PushCredentialsRefused,
    "The push service refused our certificate or key: no device of that platform can be woken until "
    "it is replaced (the circuit breaker holds further pushes)",
)
PUSH_CERTIFICATE_EXPIRING = EventType(
    "push_certificate_expiring", Severity.WARNING, PushCertificateExpiring,
    "The APNs push certificate expires soon (30, 7 and 1 days before): renew it with the same topic "
    "at https://identity.apple.com and install it with `mdm push apns set-cert`",
)
PUSH_CERTIFICATE_EXPIRED = EventType(
    "push_certificate_expired", Severity.CRITICAL, PushCertificateExpired,
    "The APNs push certificate has expired: no iOS device can be woken until it is renewed",
)
PUSH_CERTIFICATE_REPLACED = EventType(
    "push_certificate_replaced", Severity.INFO, PushCertificateReplaced,
    "A renewed APNs push certificate with the same topic was installed and taken into use",
)
PUSH_CERTIFICATE_REFUSED = EventType(
    "push_certificate_refused", Severity.CRITICAL, PushCertificateRefused,
    "A new APNs push certificate was refused (another topic, expired, key mismatch, unreadable); "
    "the running one stays in use",
)
