"""Platform-neutral tables (DESIGN §3). Protocol packages keep their own tables in their own modules
(``mdm/ios/tables.py``, ``mdm/pki/tables.py``, ...) on the same ``Base`` and add an Alembic revision.

Conventions: integer surrogate keys, UTC timestamps (``mdm.db.types.UtcDateTime``: aware on every
engine), JSON columns for protocol-specific detail, and every enum stored as text with a CHECK
constraint so that both SQLite and PostgreSQL enforce it.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mdm.db.enums import ACTIVE_COMMAND_STATUSES as ACTIVE_COMMAND_STATUSES
from mdm.db.enums import CommandStatus as CommandStatus
from mdm.db.enums import DeviceStatus as DeviceStatus
from mdm.db.enums import Protocol as Protocol
from mdm.db.enums import Severity as Severity
from mdm.db.types import UtcDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Ids a credential, a cache or another record may still name after the row is deleted (devices,
# users, groups, commands, tokens, enrollments) are never handed out again: SQLite AUTOINCREMENT
# (without it SQLite reuses the highest freed id); PostgreSQL sequences never go back.
NEVER_REUSED: dict[str, Any] = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UtcDateTime}


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Group(Base):
    """Administration group; groups nest through ``parent_id``."""

    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_groups_parent_name", "parent_id", "name"), NEVER_REUSED)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    protocol: Mapped[int] = mapped_column(Integer)
    # UDID (iOS), Android device id (KES), EAS DeviceId.
    identifier: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    os_name: Mapped[str | None] = mapped_column(String(64))
    os_version: Mapped[str | None] = mapped_column(String(64))
    build_version: Mapped[str | None] = mapped_column(String(64))
    serial_number: Mapped[str | None] = mapped_column(String(128), index=True)
    imei: Mapped[str | None] = mapped_column(String(64))
    phone_number: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeviceStatus.OK.value)
    supported_commands: Mapped[int] = mapped_column(BigInteger, default=0)
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column()
    push_token: Mapped[str | None] = mapped_column(Text)
    push_magic: Mapped[str | None] = mapped_column(String(255))
    push_valid: Mapped[bool] = mapped_column(Boolean, default=False)
    push_changed_at: Mapped[datetime | None] = mapped_column()
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    cert_not_after: Mapped[datetime | None] = mapped_column()
    # Inventory parts (apps, profiles, certificates, security, device_info) with refresh times:
    # {"apps": {"refreshed_at": iso, "items": [...]}, ...}
    inventory: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Protocol-specific attributes that are not inventory (e.g. iOS topic, KES agent version).
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (
        Index("uq_devices_protocol_identifier", "protocol", "identifier", unique=True),
        Index("ix_devices_status", "status"),
        # The device list filtered by platform and state, and its count, at 10^6 devices; by
        # platform alone in id order (the page's order: no sort of every device of the platform).
        Index("ix_devices_protocol_status", "protocol", "status"),
        Index("ix_devices_protocol_id", "protocol", "id"),
        CheckConstraint(_in("status", [s.value for s in DeviceStatus]), name="status"),
        CheckConstraint("protocol IN (1, 2, 4)", name="protocol"),
        # Room on each page for a new version of every row: the last-seen write-behind's updates
        # stay HOT (revision 0021).
        {**NEVER_REUSED, "postgresql_with": {"fillfactor": 50}},
    )


class Command(Base):
    """Every command ever issued; the small ``command_queue`` holds only those still to deliver."""

    __tablename__ = "commands"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Protocol payload produced by the translator (e.g. the iOS command plist as a dict).
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    flags: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=CommandStatus.PROCESSING.value)
    result_info: Mapped[str | None] = mapped_column(Text)
    result_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Set while active so the partial unique index enforces one active command per type.
    active: Mapped[bool | None] = mapped_column(Boolean, default=True)
    # The bulk operation that queued it (no foreign key: an old operation may be purged while its
    # commands stay in the device's log); counts delivered/completed/failed per operation.
    bulk_id: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_commands_device_created", "device_id", "id"),
        Index("ix_commands_bulk_status", "bulk_id", "status"),
        Index(
            "uq_commands_one_active_type",
            "device_id",
            "type",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
        CheckConstraint(_in("status", [s.value for s in CommandStatus]), name="status"),
        NEVER_REUSED,
    )


class CommandQueueEntry(Base):
    """The hot queue: one row per undelivered or in-flight command. Rows leave on completion."""

    __tablename__ = "command_queue"
    # No foreign key: the row is written only with its command, and the trigger
    # ``commands_gone`` deletes it with its command (migration 0020: the key's insert check cost
    # PostgreSQL a trigger call and a lock of the command per queued command).
    command_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    # Always its command's device; no foreign key of its own: the row goes with its command, and
    # the command with its device. A second check cost PostgreSQL a trigger call and a lock of
    # the device per queued command (migration 0019).
    device_id: Mapped[int] = mapped_column(BigId)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Not offered before this time (NotNow back-off); null = available now.
    not_before: Mapped[datetime | None] = mapped_column()
    # Delivered and awaiting the device's answer.
    in_flight: Mapped[bool] = mapped_column(Boolean, default=False)
    not_now_count: Mapped[int] = mapped_column(Integer, default=0)
    __table_args__ = (Index("ix_command_queue_device_order", "device_id", "priority", "command_id"),)


class CommandJournalEntry(Base):
    __tablename__ = "command_journal"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign key: deleted with its command by the trigger ``commands_gone`` (migration 0020).
    command_id: Mapped[int] = mapped_column(BigId, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    """Transactional outbox: written with the state change it reports, delivered later."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(24))
    device_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    # Refusals by the core server (an outage never counts); at the configured number the event is
    # dead-lettered: ``dead_at`` set, ``last_error`` says why (mdm/reporting, migration 0015).
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    dead_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(255))
    __table_args__ = (
        CheckConstraint(_in("severity", [s.value for s in Severity]), name="severity"),
        Index(
            "ix_events_undelivered",
            "id",
            sqlite_where=text("delivered_at IS NULL AND dead_at IS NULL"),
            postgresql_where=text("delivered_at IS NULL AND dead_at IS NULL"),
        ),
        Index(
            "ix_events_dead",
            "id",
            sqlite_where=text("dead_at IS NOT NULL"),
            postgresql_where=text("dead_at IS NOT NULL"),
        ),
        Index(
            "ix_events_delivered_at",
            "delivered_at",
            sqlite_where=text("delivered_at IS NOT NULL"),
            postgresql_where=text("delivered_at IS NOT NULL"),
        ),
    )


class ApiToken(Base):
    """Admin API bearer tokens, stored only as SHA-256 of the secret."""

    __tablename__ = "api_tokens"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # Public lookup prefix (first characters of the token) so verification is one indexed read.
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    scopes: Mapped[str] = mapped_column(Text)  # space-separated
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class BulkState(enum.StrEnum):
    QUEUING = "queuing"  # batches still being queued (resumed at start-up)
    QUEUED = "queued"  # every target queued or skipped
    RECALLING = "recalling"  # recall asked; what is still queued is being removed
    RECALLED = "recalled"
    FAILED = "failed"  # queuing stopped on an error it cannot retry (``error`` says which)


class BulkTarget(enum.StrEnum):
    ALL = "all"
    GROUP = "group"
    DEVICES = "devices"


class BulkOperation(Base):
    """One command sent to many devices, queued in batches by a worker (``mdm.core.bulk``).

    ``cursor`` is the last device id done (queued or skipped): every batch moves it, writes its
    commands, queue rows, journal rows, skipped rows and the counters in ONE transaction, so a
    restart resumes exactly where the last committed batch ended."""

    __tablename__ = "bulk_operations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    # Public arguments (secrets masked) as shown; ``request_args`` are the arguments as given,
    # needed to translate the remaining batches, dropped once queuing has ended.
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_args: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    target: Mapped[str] = mapped_column(String(8))
    group_id: Mapped[int | None] = mapped_column(BigInteger)
    # The group and its subgroups at the time of the request (target "group").
    group_ids: Mapped[list[int] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=BulkState.QUEUING.value)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Highest device id at the request: devices enrolled later are not targeted.
    max_device_id: Mapped[int] = mapped_column(BigInteger, default=0)
    targeted: Mapped[int] = mapped_column(BigInteger, default=0)
    queued: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    # {"reason": count} of the skipped devices.
    skipped_reasons: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    woken: Mapped[int] = mapped_column(BigInteger, default=0)
    recalled: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    __table_args__ = (
        Index("ix_bulk_operations_state", "state"),
        CheckConstraint(_in("state", [s.value for s in BulkState]), name="state"),
        CheckConstraint(_in("target", [t.value for t in BulkTarget]), name="target"),
        NEVER_REUSED,
    )


class BulkTargetDevice(Base):
    """The device ids an operation with an explicit list names (unknown ones included: they are
    reported as skipped)."""

    __tablename__ = "bulk_targets"
    bulk_id: Mapped[int] = mapped_column(
        ForeignKey("bulk_operations.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class BulkSkipped(Base):
    """A targeted device that did not get the command, and why (paged by device id)."""

    __tablename__ = "bulk_skipped"
    bulk_id: Mapped[int] = mapped_column(
        ForeignKey("bulk_operations.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(Text)
