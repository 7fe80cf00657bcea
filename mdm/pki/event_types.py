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


CERT_ISSUED = EventType("cert_issued", Severity.INFO, CertIssued, "A certificate was issued and recorded")
CERT_RENEWED = EventType(
    "cert_renewed", Severity.INFO, CertRenewed,
    "A certificate was issued as the renewal of another, which is now superseded",
)
CERT_REVOKED = EventType("cert_revoked", Severity.WARNING, CertRevoked, "A certificate was revoked")
CERT_EXPIRED = EventType("cert_expired", Severity.WARNING, CertExpired, "A valid certificate reached its end")
CERT_EXPIRING = EventType(
    "cert_expiring", Severity.WARNING, CertExpiring, "A certificate entered its type's renewal window"
)
CERT_RENEWAL_REQUESTED = EventType(
    "cert_renewal_requested", Severity.INFO, CertRenewalRequested,
    "The device's protocol was asked to renew a certificate",
)
CERT_RULE_CHANGED = EventType(
    "cert_rule_changed", Severity.INFO, CertRuleChanged, "An issuance rule of a certificate type changed"
)
SERVER_CERT_REPLACED = EventType(
    "server_cert_replaced", Severity.INFO, ServerCertReplaced,
    "A server certificate slot was replaced (WARNING when devices pinned the old certificate)",
)
CA_IMPORTED = EventType(
    "ca_imported", Severity.INFO, CaImported, "The issuing CA was imported (mdm certs import-ca)"
)
