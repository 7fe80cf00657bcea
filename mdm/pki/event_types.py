"""Events of the PKI: certificate life cycle, issuance rules, server certificates and the CA."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.models import Severity


class CertIssued(EventBody):
    serial: str
    cert_type: str
    subject: str
    not_after: str
    source: str


class CertRenewed(CertIssued):
    renews_serial: str


class CertRevoked(EventBody):
    serial: str
    cert_type: str
    subject: str
    reason: str
    by: str


class CertExpired(EventBody):
    serial: str
    cert_type: str
    subject: str
    not_after: str


class CertExpiring(CertExpired):
    days_left: int


class CertRenewalRequested(EventBody):
    serial: str
    cert_type: str
    protocol: str
    note: str


class CertRuleChanged(EventBody):
    cert_type: str
    changes: dict[str, list[int | str | None]]  # field -> [before, after]
    by: str


class ServerCertReplaced(EventBody):
    slot: str
    old: dict[str, str] | None
    new: dict[str, str] | None
    pinned_devices: int | None
    by: str


class CaImported(EventBody):
    subject: str
    serial: str
    sha256: str
    not_after: str
    retired: str | None
    by: str


CERT_ISSUED = EventType(
    "cert_issued", Severity.INFO, CertIssued,
    "A certificate was issued and recorded",
    example={
        "serial": "5A3F9C0D11E2",
        "cert_type": "mobile",
        "subject": "CN=00008030-001A2B3C4D5E802E",
        "not_after": "2027-12-03T12:00:00+00:00",
        "source": "internal",
    },
)
CERT_RENEWED = EventType(
    "cert_renewed", Severity.INFO, CertRenewed,
    "A certificate was issued as the renewal of another, which is now superseded",
    example={
        "serial": "5A3F9C0D11F7",
        "cert_type": "mobile",
        "subject": "CN=00008030-001A2B3C4D5E802E",
        "not_after": "2028-12-03T12:00:00+00:00",
        "source": "internal",
        "renews_serial": "5A3F9C0D11E2",
    },
)
CERT_REVOKED = EventType(
    "cert_revoked", Severity.WARNING, CertRevoked,
    "A certificate was revoked",
    example={
        "serial": "5A3F9C0D11E2",
        "cert_type": "mobile",
        "subject": "CN=00008030-001A2B3C4D5E802E",
        "reason": "keyCompromise",
        "by": "ops",
    },
)
CERT_EXPIRED = EventType(
    "cert_expired", Severity.WARNING, CertExpired,
    "A valid certificate reached its end",
    example={
        "serial": "5A3F9C0D11E2",
        "cert_type": "mobile",
        "subject": "CN=00008030-001A2B3C4D5E802E",
        "not_after": "2026-12-03T12:00:00+00:00",
    },
)
CERT_EXPIRING = EventType(
    "cert_expiring", Severity.WARNING, CertExpiring, "A certificate entered its type's renewal window",
    example={
        "serial": "5A3F9C0D11E2",
        "cert_type": "mobile",
        "subject": "CN=00008030-001A2B3C4D5E802E",
        "not_after": "2026-12-31T12:00:00+00:00",
        "days_left": 28,
    },
)
CERT_RENEWAL_REQUESTED = EventType(
    "cert_renewal_requested", Severity.INFO, CertRenewalRequested,
    "The device's protocol was asked to renew a certificate",
    example={
        "serial": "5A3F9C0D11E2",
        "cert_type": "mobile",
        "protocol": "ios",
        "note": "an InstallProfile with a new SCEP payload was queued",
    },
)
CERT_RULE_CHANGED = EventType(
    "cert_rule_changed", Severity.INFO, CertRuleChanged, "An issuance rule of a certificate type changed",
    example={"cert_type": "mobile", "changes": {"validity_days": [365, 730]}, "by": "ops"},
)
SERVER_CERT_REPLACED = EventType(
    "server_cert_replaced", Severity.INFO, ServerCertReplaced,
    "A server certificate slot was replaced (WARNING when devices pinned the old certificate)",
    example={
        "slot": "ios",
        "old": {"serial": "01AB", "sha256": "3f2a...e9", "not_after": "2027-01-01T00:00:00+00:00"},
        "new": {"serial": "01AC", "sha256": "77c0...1d", "not_after": "2028-01-01T00:00:00+00:00"},
        "pinned_devices": 0,
        "by": "cli",
    },
)
CA_IMPORTED = EventType(
    "ca_imported", Severity.INFO, CaImported, "The issuing CA was imported (mdm certs import-ca)",
    example={
        "subject": "CN=Example MDM CA",
        "serial": "1000",
        "sha256": "9b8e...41",
        "not_after": "2036-12-03T12:00:00+00:00",
        "retired": None,
        "by": "cli",
    },
)


class CertRequestOutcome(EventBody):
    request_id: int | None  # our certificate_requests row (None: refused at submission, no row)
    source: str
    ca_request_id: str | None
    cert_type: str
    subject: str  # the requested common name
    purpose: str
    message: str  # the CA's own words, or why the request could not be made


CERT_REQUEST_PENDING = EventType(
    "cert_request_pending", Severity.INFO, CertRequestOutcome,
    "A certificate source holds a request for approval; the pki.requests worker polls it",
    example={
        "request_id": 12, "source": "adcs", "ca_request_id": "4711", "cert_type": "mobile",
        "subject": "alice", "purpose": "enrollment:42", "message": "Taken Under Submission",
    },
)
CERT_REQUEST_DENIED = EventType(
    "cert_request_denied", Severity.WARNING, CertRequestOutcome,
    "A certificate source denied a request (at submission or after being pending)",
    example={
        "request_id": None, "source": "adcs", "ca_request_id": "4712", "cert_type": "mobile",
        "subject": "bob", "purpose": "api", "message": "Denied by Policy Module",
    },
)
CERT_REQUEST_FAILED = EventType(
    "cert_request_failed", Severity.WARNING, CertRequestOutcome,
    "A certificate request could not be made (source unavailable) or a pending one was given up",
    example={
        "request_id": None, "source": "adcs", "ca_request_id": None, "cert_type": "mobile",
        "subject": "carol", "purpose": "scep:7F3A", "message": "connection refused",
    },
)
CERT_REQUEST_CANCELLED = EventType(
    "cert_request_cancelled", Severity.INFO, CertRequestOutcome,
    "An administrator cancelled a pending certificate request (the CA keeps its own copy)",
    example={
        "request_id": 12, "source": "adcs", "ca_request_id": "4711", "cert_type": "mobile",
        "subject": "alice", "purpose": "api", "message": "cancelled by ops",
    },
)
