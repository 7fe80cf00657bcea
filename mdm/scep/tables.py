"""SCEP tables: one-time enrollment challenges and SCEP transactions (pending, issued, rejected)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import Base, BigId, utcnow


class ScepChallenge(Base):
    """A one-time challenge password; only its SHA-256 is stored."""

    __tablename__ = "scep_challenges"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # First characters of the challenge: an indexed lookup, then a constant-time hash comparison.
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    purpose: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


class TransactionStatus(enum.StrEnum):
    PENDING = "pending"
    ISSUED = "issued"
    REJECTED = "rejected"


class ScepTransaction(Base):
    """A PKCSReq/RenewalReq that was accepted (issued at once, or pending approval)."""

    __tablename__ = "scep_transactions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(128), unique=True)
    message_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    # SHA-256 (hex) of the SubjectPublicKeyInfo of the CSR key and of the message signer's key.
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    signer_fingerprint: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    csr: Mapped[bytes] = mapped_column(LargeBinary)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    challenge_id: Mapped[int | None] = mapped_column(ForeignKey("scep_challenges.id", ondelete="SET NULL"))
    renews_serial: Mapped[str | None] = mapped_column(String(64))
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()
    decided_by: Mapped[str | None] = mapped_column(String(255))
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'issued', 'rejected')", name="status"),
        Index("ix_scep_transactions_status", "status"),
        # Every Authenticate asks which SCEP challenge issued the device's certificate.
        Index("ix_scep_transactions_cert_serial", "cert_serial"),
    )
