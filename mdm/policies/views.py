"""What the policies service hands back and takes in: plain values, built inside the transaction
(no ORM object leaves the service), and the service's errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mdm.core.errors import ServiceError
from mdm.policies.effective import Contributor
from mdm.policies.seams import PolicySetting
from mdm.policies.tables import Policy, PolicyProfile


class StaleRevision(ServiceError):
    status = 409
    code = "stale_revision"


class PolicyExists(ServiceError):
    status = 409
    code = "policy_exists"


class ProfileExists(ServiceError):
    status = 409
    code = "profile_exists"


class TooManyProfiles(ServiceError):
    status = 409
    code = "too_many_profiles"


class UnknownSetting(ServiceError):
    status = 422
    code = "unknown_setting"


class ConflictingChange(ServiceError):
    status = 422
    code = "conflicting_change"


@dataclass(frozen=True)
class ProfileView:
    id: int
    name: str
    priority: int
    active: bool
    conditions: dict[str, Any]
    settings: dict[str, PolicySetting]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: PolicyProfile) -> ProfileView:
        return cls(row.id, row.name, row.priority, row.active, dict(row.conditions),
                   {k: PolicySetting(v["value"], bool(v["locked"])) for k, v in row.settings.items()},
                   row.created_at, row.updated_at)


@dataclass(frozen=True)
class PolicyView:
    id: int
    group_id: int
    name: str
    active: bool
    inherit: bool
    force_inheritance: bool
    revision: int
    settings: dict[str, PolicySetting]
    profiles: list[ProfileView]
    created_at: datetime
    updated_at: datetime
    updated_by: str | None

    @classmethod
    def of(cls, row: Policy, profiles: list[PolicyProfile]) -> PolicyView:
        return cls(row.id, row.group_id, row.name, row.active, row.inherit, row.force_inheritance,
                   row.revision,
                   {k: PolicySetting(v["value"], bool(v["locked"])) for k, v in row.settings.items()},
                   [ProfileView.of(p) for p in sorted(profiles, key=lambda p: (-p.priority, p.name))],
                   row.created_at, row.updated_at, row.updated_by)


@dataclass
class PolicyChange:
    """A change of a policy: ``settings`` replaces the whole document; ``set``/``unset`` edit keys;
    ``lock``/``unlock`` flip the lock of existing keys; ``None`` flags stay as they are."""

    name: str | None = None
    inherit: bool | None = None
    force_inheritance: bool | None = None
    settings: Mapping[str, PolicySetting] | None = None
    set: Mapping[str, PolicySetting] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    lock: list[str] = field(default_factory=list)
    unlock: list[str] = field(default_factory=list)


@dataclass
class ProfileChange:
    priority: int | None = None
    active: bool | None = None
    conditions: Mapping[str, Any] | None = None
    settings: Mapping[str, PolicySetting] | None = None
    set: Mapping[str, PolicySetting] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeviceView:
    """Desired vs applied for one device."""

    device_id: int
    group_id: int | None
    desired_version: str
    applied_version: str | None
    applied_at: datetime | None
    settings: dict[str, PolicySetting]
    sources: dict[str, str]
    contributors: tuple[Contributor, ...]
    tags: list[str]
    local_settings: dict[str, Any] | None
    applied_settings: dict[str, Any] | None
