"""Policy tables: one policy per administration group (for the KES application), its profiles,
device tags, the version each device applied, and the revision counters that tell every replica's
resolver cache that something changed (``docs/policies.md``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import NEVER_REUSED, Base, BigId, utcnow


class Policy(Base):
    """A settings document of a group: ``settings`` is ``{key: {"value": JSON, "locked": bool}}``.
    ``revision`` starts at 1 and grows with every change of the policy or of its profiles (the
    optimistic-concurrency token of the admin API)."""

    __tablename__ = "policies"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # A deleted group takes its policy along (a group is deleted only when empty).
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    inherit: Mapped[bool] = mapped_column(Boolean, default=True)
    force_inheritance: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255))
    # One policy per group (and application: KES is the only one).
    __table_args__ = (Index("uq_policies_group_id", "group_id", unique=True), NEVER_REUSED)


class PolicyProfile(Base):
    """A named settings fragment of a policy, applied over it while its conditions hold:
    ``conditions`` is ``{"tags_any": [...], "tags_all": [...], "out_of_office": schedule | null}``."""

    __tablename__ = "policy_profiles"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        Index("uq_policy_profiles_policy_id_name", "policy_id", "name", unique=True), NEVER_REUSED
    )


class DeviceTag(Base):
    """A tag of a device (profile activation conditions match them)."""

    __tablename__ = "device_tags"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class PolicyDevice(Base):
    """Per device: the policy version it reported applied (written only when it changes), and the
    tags revision of its last tag change (replicas drop their cached tags of the devices whose
    ``tags_revision`` passed the one they saw)."""

    __tablename__ = "policy_devices"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    applied_version: Mapped[str | None] = mapped_column(String(64))
    applied_at: Mapped[datetime | None] = mapped_column()
    tags_revision: Mapped[int] = mapped_column(BigInteger, default=0)
    __table_args__ = (Index("ix_policy_devices_tags_revision", "tags_revision"),)


class PolicyState(Base):
    """One row (id 1): ``revision`` grows with every change of any policy or profile,
    ``tags_revision`` with every change of any device's tags. Each replica's resolver reads it
    (at most every half second) and reloads what changed. Bumping it first in a change's
    transaction also serializes concurrent policy edits."""

    __tablename__ = "policy_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    tags_revision: Mapped[int] = mapped_column(BigInteger, default=0)
