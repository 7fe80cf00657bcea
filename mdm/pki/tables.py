"""PKI tables: every certificate the service issues, with its status."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import Base, BigId, utcnow


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
    __table_args__ = (
        CheckConstraint("status IN ('valid', 'revoked', 'expired', 'superseded')", name="status"),
        Index("ix_certificates_status_not_after", "status", "not_after"),
    )
