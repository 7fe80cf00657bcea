"""KES-only tables: the identity binding and agent state of an Android device, and mugshots.

The device itself is a row of ``devices`` (protocol 2, identifier = the Android device id); its
owner (``devices.user_id``) is set when the certificate is issued, not at registration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import NEVER_REUSED, Base, BigId, utcnow


class KesDevice(Base):
    __tablename__ = "kes_devices"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    # The enrollment whose one-time token registered the device (its user owns the certificate).
    enrollment_id: Mapped[int | None] = mapped_column(BigInteger)
    # SHA-256 of the DER of the client certificate bound to the device; null until one is issued.
    cert_fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    agent_version: Mapped[str | None] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    bound_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by the renewal worker (the KES ``Renewer``); the next sync answers renew_certificate.
    renew_requested_at: Mapped[datetime | None] = mapped_column()
    # Per-device sync interval (seconds); null: the [kes] default.
    sync_interval: Mapped[int | None] = mapped_column(Integer)
    last_sync_at: Mapped[datetime | None] = mapped_column()
    # The policy version last sent to the device (the device reports what it applied).
    policy_sent_version: Mapped[str | None] = mapped_column(String(64))
    # The policy version the device last reported applied (sync's applied_policy_version).
    policy_applied_version: Mapped[str | None] = mapped_column(String(64))
    # The last sync that changed anything: its request id, the SHA-256 of its body and the answer,
    # so that a repeat is answered the same and applies nothing twice (docs/kes-protocol.md).
    last_request_id: Mapped[str | None] = mapped_column(String(64))
    last_request_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    last_answer: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Identity (docs/kes-protocol.md, certificate): the certificate the binding moved away from at
    # the last renewal, still accepted until it expires or is revoked; and the last certificate
    # request (its id, the SHA-256 of its CSR, the serial issued) so that a retry gets the same one.
    previous_fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    cert_request_id: Mapped[str | None] = mapped_column(String(64))
    cert_request_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    cert_request_serial: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (
        Index("uq_kes_devices_cert_fingerprint", "cert_fingerprint", unique=True),
        Index("ix_kes_devices_previous_fingerprint", "previous_fingerprint"),
    )


class KesMugshot(Base):
    """A picture a device took for a Mugshot command (size-limited, content type checked)."""

    __tablename__ = "kes_mugshots"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    command_guid: Mapped[str] = mapped_column(String(36))
    content_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    taken_at: Mapped[datetime | None] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        Index("ix_kes_mugshots_device_id", "device_id", "id"),
        Index("uq_kes_mugshots_command_guid", "command_guid", unique=True),
        NEVER_REUSED,
    )
