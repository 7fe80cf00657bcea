"""iOS-only tables: the identity binding and secrets of an enrolled device, and the re-push seam.

Secrets (UnlockToken, BootstrapToken) live here and never in ``Device.attributes`` (which the
admin API shows), events or logs. They are stored as given by the device, not encrypted: the
service has no key store shared by replicas yet; database access is the protection.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import Base, utcnow


class IosDevice(Base):
    __tablename__ = "ios_devices"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    # SHA-256 of the DER of the identity certificate bound to this enrollment.
    cert_fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    cert_not_before: Mapped[datetime | None] = mapped_column()
    topic: Mapped[str | None] = mapped_column(String(255))
    unlock_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    bootstrap_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    bootstrap_token_at: Mapped[datetime | None] = mapped_column()
    awaiting_configuration: Mapped[bool] = mapped_column(Boolean, default=False)
    bound_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # CMS signingTime of the last check-in that changed something: an older one is a replay.
    last_signed_at: Mapped[datetime | None] = mapped_column()
    __table_args__ = (Index("uq_ios_devices_cert_fingerprint", "cert_fingerprint", unique=True),)


class IosPushRequest(Base):
    """A wake-up the APNs worker owes a device (NotNow back-off, pending commands)."""

    __tablename__ = "ios_push_requests"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    due_at: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_ios_push_requests_due_at", "due_at"),)
