"""The event types of enrollment: one-time links made, mailed, downloaded, expired and revoked.
Each is declared once; ``events.emit`` takes these values."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class _Enrollment(EventBody):
    """What every event about one enrollment says about it."""

    enrollment_id: int
    user: str
    platform: str
    delivery: str
    identity: str
    mdm_profile_identifier: str
    for_device_id: int | None = None


class EnrollmentCreated(_Enrollment):
    user_created: bool
    # A link: when it expires and where it is mailed; a file: the identity it carries.
    expires_at: str | None = None
    email: str | None = None
    cert_serial: str | None = None


class EnrollmentDownloaded(_Enrollment):
    cert_serial: str | None = None
    peer: str | None = None


class EnrollmentDownloadFailed(EventBody):
    enrollment_id: int
    error: str


class EnrollmentMailed(EventBody):
    enrollment_id: int
    to: str


class EnrollmentMailFailed(EnrollmentMailed):
    error: str


class EnrollmentExpired(EventBody):
    enrollment_id: int
    expires_at: str


class EnrollmentRevoked(EventBody):
    enrollment_id: int
    user: str
    by: str | None = None
    # An Android enrollment: its agent's unused one-time enrollment token was ended with it.
    token_revoked: bool = False


ENROLLMENT_CREATED = EventType(
    "enrollment_created", Severity.INFO, EnrollmentCreated,
    "An enrollment was made: a one-time profile link, or a profile file for Apple Configurator",
    example={
        "enrollment_id": 17,
        "user": "alice@example.com",
        "platform": "ios",
        "delivery": "link",
        "identity": "scep",
        "mdm_profile_identifier": "com.example.mdm.17",
        "user_created": False,
        "expires_at": "2026-12-10T12:00:00+00:00",
        "email": "alice@example.com",
    },
)
ENROLLMENT_DOWNLOADED = EventType(
    "enrollment_downloaded", Severity.INFO, EnrollmentDownloaded,
    "A one-time link was used: the profile was built (identity issued) and served",
    example={
        "enrollment_id": 17,
        "user": "alice@example.com",
        "platform": "ios",
        "delivery": "link",
        "identity": "pkcs12",
        "mdm_profile_identifier": "com.example.mdm.17",
        "cert_serial": "5A3F9C0D11E2",
        "peer": "198.51.100.23",
    },
)
ENROLLMENT_DOWNLOAD_FAILED = EventType(
    "enrollment_download_failed", Severity.FUNCTIONAL_FAILURE, EnrollmentDownloadFailed,
    "The profile behind a link could not be built; the link stays usable",
    example={"enrollment_id": 17, "error": "the CA refused to sign: key too small"},
)
ENROLLMENT_MAILED = EventType(
    "enrollment_mailed", Severity.INFO, EnrollmentMailed, "A one-time link was handed to the SMTP server",
    example={"enrollment_id": 17, "to": "alice@example.com"},
)
ENROLLMENT_MAIL_FAILED = EventType(
    "enrollment_mail_failed", Severity.WARNING, EnrollmentMailFailed,
    "A one-time link could not be mailed; the link stays usable",
    example={"enrollment_id": 17, "to": "alice@example.com", "error": "SMTP 550: mailbox unavailable"},
)
ENROLLMENT_EXPIRED = EventType(
    "enrollment_expired", Severity.INFO, EnrollmentExpired, "An unused one-time link passed its expiry",
    example={"enrollment_id": 17, "expires_at": "2026-12-10T12:00:00+00:00"},
)
ENROLLMENT_REVOKED = EventType(
    "enrollment_revoked", Severity.INFO, EnrollmentRevoked,
    "An administrator withdrew an unused one-time link (Android: or an unused enrollment token)",
    example={"enrollment_id": 17, "user": "alice@example.com", "by": "ops", "token_revoked": False},
)
