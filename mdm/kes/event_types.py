"""Events of the KES identity: registration, the certificate binding, renewal, unenroll, and the
refused requests and handshakes of the ``kes`` listener. (The sync's are in ``event_types_sync``.)"""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.models import Severity


class DeviceRegistered(EventBody):
    identifier: str
    enrollment_id: int
    created: bool  # a new device (False: the facts of a known one were updated)
    manufacturer: str | None = None
    model: str | None = None
    os_version: str | None = None
    agent_version: str | None = None
    push_token_changed: bool = False
    # The Android id had a binding that ended, or an allowed re-enrollment took it over.
    takeover: str | None = None


class DeviceEnrolled(EventBody):
    identifier: str
    enrollment_id: int
    cert_serial: str
    not_after: str


class CertificateRenewed(EventBody):
    identifier: str
    cert_serial: str
    renews_serial: str
    not_after: str


class DeviceUnenrolled(EventBody):
    identifier: str
    reason: str | None = None
    commands_failed: int


class RenewalRequested(EventBody):
    identifier: str
    cert_serial: str


class IdentityRejected(EventBody):
    code: str  # the error code the device got (certificate_revoked, token_used, ...)
    reason: str  # finer: why (e.g. wrong_purpose for a token made for something else)
    message: str
    peer: str | None = None
    path: str
    identifier: str | None = None
    serial: str | None = None


class HandshakeRejected(EventBody):
    peer: str | None = None
    reason: str
    message: str


KES_DEVICE_REGISTERED = EventType(
    "kes_device_registered",
    Severity.INFO,
    DeviceRegistered,
    "An Android agent registered its device with a valid enrollment token (created or updated; "
    "no user yet, the certificate associates it)",
    example={
        "identifier": "8f2d61c0a4b3e519",
        "enrollment_id": 23,
        "created": True,
        "manufacturer": "Samsung",
        "model": "SM-G991B",
        "os_version": "14",
        "agent_version": "11.2.0.101",
        "push_token_changed": True,
    },
)
KES_DEVICE_ENROLLED = EventType(
    "kes_device_enrolled",
    Severity.INFO,
    DeviceEnrolled,
    "An Android device redeemed its enrollment token for a certificate and is bound to it, "
    "associated with the enrollment's user",
    example={
        "identifier": "8f2d61c0a4b3e519",
        "enrollment_id": 23,
        "cert_serial": "61B0E4F2A9",
        "not_after": "2027-12-03T12:00:00+00:00",
    },
)
KES_CERTIFICATE_RENEWED = EventType(
    "kes_certificate_renewed",
    Severity.INFO,
    CertificateRenewed,
    "An Android device renewed its certificate over mutual TLS; the binding moved to the new one",
    example={
        "identifier": "8f2d61c0a4b3e519",
        "cert_serial": "61B0E4F2C0",
        "renews_serial": "61B0E4F2A9",
        "not_after": "2028-12-03T12:00:00+00:00",
    },
)
KES_DEVICE_UNENROLLED = EventType(
    "kes_device_unenrolled",
    Severity.WARNING,
    DeviceUnenrolled,
    "An Android device left management (its agent unenrolled); its pending commands failed",
    example={"identifier": "8f2d61c0a4b3e519", "reason": "user", "commands_failed": 1},
)
KES_RENEWAL_REQUESTED = EventType(
    "kes_renewal_requested",
    Severity.INFO,
    RenewalRequested,
    "The certificate renewal worker asked an Android device to renew (answered in its next sync)",
    example={"identifier": "8f2d61c0a4b3e519", "cert_serial": "61B0E4F2A9"},
)
SECURITY_KES_IDENTITY_REJECTED = EventType(
    "security_kes_identity_rejected",
    Severity.WARNING,
    IdentityRejected,
    "A request on the KES listener was refused for its identity (no, expired, revoked, untrusted "
    "or unbound client certificate; unmanaged device; unknown, used or expired enrollment token); "
    "beyond the first few per source, aggregated",
    example={
        "code": "token_used",
        "reason": "token_used",
        "message": "this enrollment token was already used",
        "peer": "203.0.113.9",
        "path": "/kes/v1/enroll",
    },
)
SECURITY_KES_HANDSHAKE_REJECTED = EventType(
    "security_kes_handshake_rejected",
    Severity.WARNING,
    HandshakeRejected,
    "A TLS handshake on the KES listener failed on the client certificate (e.g. a foreign CA); "
    "beyond the first few per source, aggregated",
    example={
        "peer": "203.0.113.9",
        "reason": "unknown_ca",
        "message": "the client certificate is not issued by this server's CA",
    },
)
