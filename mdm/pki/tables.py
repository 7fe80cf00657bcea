"""PKI tables: every certificate the service issues, with its status, and the issuance rules of
the user/device certificate types."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import NEVER_REUSED, Base, BigId, utcnow


class CertStatus(enum.StrEnum):
    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"  # renewed; the old one stays valid until it expires or is revoked


class CertType(enum.StrEnum):
    MOBILE = "mobile"
    MAIL = "mail"
    VPN = "vpn"
    SERVER = "server"


# Types that have issuance rules (user/device certificates); server certificates follow [pki].
RULE_TYPES = (CertType.MOBILE, CertType.MAIL, CertType.VPN)


class IssuedCertificateRecord(Base):
    __tablename__ = "certificates"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)  # lower-case hex, no leading zeros
    type: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    device_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    source: Mapped[str] = mapped_column(String(32), default="internal")
    status: Mapped[str] = mapped_column(String(16), default=CertStatus.VALID.value)
    not_before: Mapped[datetime] = mapped_column()
    not_after: Mapped[datetime] = mapped_column()
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    # Serial of the certificate this one renews.
    renews_serial: Mapped[str | None] = mapped_column(String(64))
    pem: Mapped[str] = mapped_column(Text)
    # Renewal bookkeeping: when cert_expiring was emitted, when a protocol was last asked to renew.
    expiring_notified_at: Mapped[datetime | None] = mapped_column()
    renewal_requested_at: Mapped[datetime | None] = mapped_column()
    __table_args__ = (
        CheckConstraint("status IN ('valid', 'revoked', 'expired', 'superseded')", name="status"),
        Index("ix_certificates_status_not_after", "status", "not_after"),
    )


class IssuanceRuleRecord(Base):
    """One row per certificate type (mobile, mail, vpn); defaults are inserted by the migration."""

    __tablename__ = "certificate_rules"
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    validity_days: Mapped[int] = mapped_column(Integer)
    key_type: Mapped[str] = mapped_column(String(8))
    key_size: Mapped[int] = mapped_column(Integer)  # RSA bits, or the EC curve size (256)
    renewal_days: Mapped[int] = mapped_column(Integer)  # renew this long before expiry; 0: never
    source: Mapped[str] = mapped_column(String(32))  # a registered CertificateSource name
    template: Mapped[str | None] = mapped_column(String(255))  # enterprise PKI template name
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255))
    __table_args__ = (CheckConstraint("key_type IN ('rsa', 'ec')", name="key_type"),)


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    ISSUED = "issued"
    DENIED = "denied"
    FAILED = "failed"  # gave up (request_max_days) or the CA lost it
    CANCELLED = "cancelled"


class CertificateRequestRecord(Base):
    """A request a certificate source answered "pending": polled by the ``pki.requests`` worker
    until the CA issues or denies it. ``encrypted_key``: the PKCS#8 of a key generated here (an
    iOS profile's PKCS#12), encrypted at rest; deleted once the certificate has been handed out."""

    __tablename__ = "certificate_requests"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    ca_request_id: Mapped[str] = mapped_column(String(255))
    cert_type: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    device_id: Mapped[int | None] = mapped_column(BigInteger)
    common_name: Mapped[str] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.PENDING.value)
    message: Mapped[str | None] = mapped_column(Text)  # the CA's own words
    purpose: Mapped[str] = mapped_column(String(128))  # "scep:<txn>", "enrollment:<id>", "kes:<id>", "api"
    csr_pem: Mapped[str | None] = mapped_column(Text)
    encrypted_key: Mapped[str | None] = mapped_column(Text)
    renews_serial: Mapped[str | None] = mapped_column(String(64))
    serial: Mapped[str | None] = mapped_column(String(64))  # once issued
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_poll_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'issued', 'denied', 'failed', 'cancelled')", name="status"
        ),
        Index("ix_certificate_requests_status_next_poll_at", "status", "next_poll_at"),
        Index("ix_certificate_requests_purpose", "purpose"),
        NEVER_REUSED,
    )
