"""EAS-only tables: what discovery found in Exchange.

A phone is a row of ``devices`` (protocol 4, identifier = its EAS DeviceId); ``eas_devices`` holds
its ActiveSync *partnerships*: one per mailbox it syncs (a phone with two accounts has two, under
one common device). The device's owner (``devices.user_id``) is the user of its first mailbox.

Nothing is deleted when Exchange stops listing it: ``vanished_at`` marks it (and an event reports
it); it clears if it comes back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import NEVER_REUSED, Base, BigId, utcnow


class EasMailbox(Base):
    __tablename__ = "eas_mailboxes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Exchange's Identity of the mailbox (what -Identity / -Mailbox are given).
    identity: Mapped[str] = mapped_column(String(1024))
    guid: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    primary_smtp: Mapped[str | None] = mapped_column(String(320))
    sam_account_name: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    activesync_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    policy: Mapped[str | None] = mapped_column(String(255))
    has_partnership: Mapped[bool] = mapped_column(Boolean, default=False)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    vanished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("uq_eas_mailboxes_identity", "identity", unique=True), NEVER_REUSED)


class EasPartnership(Base):
    """One device's ActiveSync partnership with one mailbox, and its statistics."""

    __tablename__ = "eas_devices"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("eas_mailboxes.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    # Exchange's Identity of the partnership (Clear-/Remove-…Device -Identity).
    exchange_identity: Mapped[str] = mapped_column(String(1024))
    device_type: Mapped[str | None] = mapped_column(String(255))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    first_sync: Mapped[datetime | None] = mapped_column()
    last_sync: Mapped[datetime | None] = mapped_column()
    last_sync_attempt: Mapped[datetime | None] = mapped_column()
    policy_applied: Mapped[str | None] = mapped_column(String(255))
    policy_status: Mapped[str | None] = mapped_column(String(64))
    access_state: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(64))
    # records.WipeState: none / pending / acknowledged, with Exchange's times.
    wipe_state: Mapped[str] = mapped_column(String(16), default="none")
    wipe_requested_at: Mapped[datetime | None] = mapped_column()
    wipe_sent_at: Mapped[datetime | None] = mapped_column()
    wipe_acknowledged_at: Mapped[datetime | None] = mapped_column()
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    vanished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        Index("uq_eas_devices_exchange_identity", "exchange_identity", unique=True),
        Index("ix_eas_devices_mailbox", "mailbox_id"),
    )


class EasPolicy(Base):
    """An ActiveSync mailbox policy as Exchange last showed it (or as this service set it)."""

    __tablename__ = "eas_policies"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    identity: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(255))
    guid: Mapped[str | None] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    # records.PolicySettings as JSON (None fields = Unlimited / not set).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    vanished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("uq_eas_policies_name", "name", unique=True), NEVER_REUSED)


class EasDiscovery(Base):
    """One row (id 1): the last and the current discovery run, and an on-demand request that any
    replica may set and the discovering replica picks up."""

    __tablename__ = "eas_discovery"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    requested_at: Mapped[datetime | None] = mapped_column()
    requested_by: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # "ok", "partial" (some mailboxes failed: nothing was marked vanished), "failed".
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    runner: Mapped[str | None] = mapped_column(String(255))  # host:pid of the discovering replica
    mailboxes: Mapped[int] = mapped_column(Integer, default=0)
    devices: Mapped[int] = mapped_column(Integer, default=0)
    policies: Mapped[int] = mapped_column(Integer, default=0)
    vanished: Mapped[int] = mapped_column(Integer, default=0)
    failed_mailboxes: Mapped[int] = mapped_column(Integer, default=0)
