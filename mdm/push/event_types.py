"""The event types of push (APNs, FCM, the dispatcher). Declared once; ``events.emit`` takes
these values. Fields a call site does not know are left out (their defaults)."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class PushTokenInvalid(EventBody):
    service: str  # "apns" | "fcm"
    reason: str  # the server's: BadDeviceToken, Unregistered, UNREGISTERED, ...
    status: int | None = None


class PushFailuresAggregated(EventBody):
    service: str  # "apns" | "fcm"
    # The service's reason (BadDeviceToken, TooManyRequests, QUOTA_EXCEEDED, error:ConnectError, ...)
    reason: str
    # How the dispatcher took it: retry, invalid_token, credentials, rejected, unavailable
    outcome: str
    count: int
    since: str
    until: str
    interval_seconds: float


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
    example={"service": "apns", "reason": "BadDeviceToken", "status": 400},
)
PUSH_FAILURES_AGGREGATED = EventType(
    "push_failures_aggregated", Severity.WARNING, PushFailuresAggregated,
    "Pushes that failed, counted per service and reason over an interval (5 minutes): one event per "
    "reason and interval, never one per failed push. Tokens refused for good are also reported one "
    "by one (push_token_invalid)",
    example={
        "service": "apns", "reason": "TooManyRequests", "outcome": "retry", "count": 1840,
        "since": "2026-12-03T11:55:00+00:00", "until": "2026-12-03T12:00:00+00:00",
        "interval_seconds": 300.0,
    },
)
PUSH_CREDENTIALS_REFUSED = EventType(
    "push_credentials_refused", Severity.CRITICAL, PushCredentialsRefused,
    "The push service refused our certificate or key: no device of that platform can be woken until "
    "it is replaced (the circuit breaker holds further pushes)",
    example={
        "service": "apns",
        "reason": "BadCertificate",
        "status": 403,
        "topic": "com.apple.mgmt.External.0c9e7a2b",
    },
)
PUSH_CERTIFICATE_EXPIRING = EventType(
    "push_certificate_expiring", Severity.WARNING, PushCertificateExpiring,
    "The APNs push certificate expires soon (30, 7 and 1 days before): renew it with the same topic "
    "at https://identity.apple.com and install it with `mdm push apns set-cert`",
    example={
        "topic": "com.apple.mgmt.External.0c9e7a2b",
        "not_after": "2026-12-10T09:00:00+00:00",
        "days_left": 7,
    },
)
PUSH_CERTIFICATE_EXPIRED = EventType(
    "push_certificate_expired", Severity.CRITICAL, PushCertificateExpired,
    "The APNs push certificate has expired: no iOS device can be woken until it is renewed",
    example={"topic": "com.apple.mgmt.External.0c9e7a2b", "not_after": "2026-12-03T09:00:00+00:00"},
)
PUSH_CERTIFICATE_REPLACED = EventType(
    "push_certificate_replaced", Severity.INFO, PushCertificateReplaced,
    "A renewed APNs push certificate with the same topic was installed and taken into use",
    example={
        "topic": "com.apple.mgmt.External.0c9e7a2b",
        "old_not_after": "2026-12-10T09:00:00+00:00",
        "new_not_after": "2027-12-10T09:00:00+00:00",
        "by": "cli",
    },
)
PUSH_CERTIFICATE_REFUSED = EventType(
    "push_certificate_refused", Severity.CRITICAL, PushCertificateRefused,
    "A new APNs push certificate was refused (another topic, expired, key mismatch, unreadable); "
    "the running one stays in use",
    example={
        "reason": "another topic",
        "topic": "com.apple.mgmt.External.ffff0000",
        "configured_topic": "com.apple.mgmt.External.0c9e7a2b",
    },
)
