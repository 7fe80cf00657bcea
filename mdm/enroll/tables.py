"""Enrollment records. A link's secret token is never stored, only its SHA-256."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import NEVER_REUSED, Base, BigId, utcnow


class EnrollmentStatus(enum.StrEnum):
    PENDING = "pending"  # link published, not yet downloaded
    DOWNLOADED = "downloaded"  # link used (single use)
    DELIVERED = "delivered"  # profile written to a file for Apple Configurator
    EXPIRED = "expired"
    REVOKED = "revoked"


class Delivery(enum.StrEnum):
    LINK = "link"
    FILE = "file"


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Enrollment(Base):
    __tablename__ = "enrollments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    delivery: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.PENDING.value)
    # "pkcs12" or "scep": how the profile carries the device identity.
    identity: Mapped[str] = mapped_column(String(8))
    # SHA-256 of the one-time link token (null for file delivery).
    token_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column()
    downloaded_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    mailed_at: Mapped[datetime | None] = mapped_column()
    # Top-level PayloadIdentifier of the enrollment profile: what RemoveProfile must name.
    mdm_profile_identifier: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str | None] = mapped_column(String(255))
    # Serial (hex) of the PKCS#12 identity, set when the profile is built.
    cert_serial: Mapped[str | None] = mapped_column(String(64), index=True)
    # Set by the check-in service at the device's first Authenticate.
    device_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # An administrator's re-enrollment of this device: its identity may take over the device's
    # binding whoever owns the device (otherwise only the owner's enrollments may).
    for_device_id: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (
        CheckConstraint(_in("status", [s.value for s in EnrollmentStatus]), name="status"),
        CheckConstraint(_in("delivery", [d.value for d in Delivery]), name="delivery"),
        CheckConstraint("platform IN ('ios', 'android')", name="platform"),
        CheckConstraint("identity IN ('pkcs12', 'scep')", name="identity"),
        Index("ix_enrollments_status_expires", "status", "expires_at"),
        NEVER_REUSED,
    )
