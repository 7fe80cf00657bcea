"""Request and response models of ``/api/v1/policies`` and ``/api/v1/devices/{id}/tags`` (also
their OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mdm.policies.effective import Contributor
from mdm.policies.seams import PolicySetting
from mdm.policies.views import DeviceView, PolicyView, ProfileView

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
TIME_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
SettingKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
# Setting documents: only keys of the pattern (pydantic writes patternProperties alone).
CLOSED: dict[str, Any] = {"additionalProperties": False}
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Revision = Field(default=None, ge=1, le=2**31 - 1,
                 description="the revision this change was made against (409 stale_revision if it moved "
                 "on); the If-Match header says the same")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SettingIn(Strict):
    value: Any = Field(description="a JSON string, number, boolean, array or object (not null), "
                       "nested at most 8 deep", json_schema_extra={"not": {"type": "null"}})
    locked: bool = Field(default=False, description="locked: lower policies and the device cannot change it")

    def setting(self) -> PolicySetting:
        return PolicySetting(self.value, self.locked)


class SettingOut(BaseModel):
    value: Any
    locked: bool

    @classmethod
    def of(cls, s: PolicySetting) -> SettingOut:
        return cls(value=s.value, locked=s.locked)


def settings_of(items: dict[SettingKey, SettingIn] | None) -> dict[str, PolicySetting] | None:
    return None if items is None else {k: v.setting() for k, v in items.items()}


def settings_out(settings: dict[str, PolicySetting]) -> dict[str, SettingOut]:
    return {k: SettingOut.of(s) for k, s in sorted(settings.items())}


class ScheduleInterval(Strict):
    days: list[Day] = Field(min_length=1, max_length=7, description="distinct days")
    start: str = Field(pattern=TIME_PATTERN, description="HH:MM, local time")
    end: str = Field(pattern=TIME_PATTERN,
                     description="HH:MM after start (else 422); 24:00: the end of the day")


class OutOfOffice(Strict):
    timezone: str = Field(max_length=64, description="IANA time zone, e.g. Europe/Berlin (unknown: 422)")
    office_hours: list[ScheduleInterval] = Field(min_length=1, max_length=28)


class Conditions(Strict):
    tags_any: list[Tag] = Field(default_factory=list, max_length=32, description="the device has one of them")
    tags_all: list[Tag] = Field(default_factory=list, max_length=32, description="the device has all of them")
    out_of_office: OutOfOffice | None = Field(default=None, description="active outside these office hours")


class PolicyIn(Strict):
    group_id: int = Field(ge=1, le=2**62)
    name: str = Field(min_length=1, max_length=255)
    settings: dict[SettingKey, SettingIn] = Field(
        default_factory=dict, max_length=500, json_schema_extra=CLOSED)
    active: bool = True
    inherit: bool = Field(default=True, description="take the parent groups' policies (their locks hold)")
    force_inheritance: bool = Field(
        default=False, description="subgroups' policies inherit, whatever they say"
    )


class PolicyPatch(Strict):
    revision: int | None = Revision
    name: str | None = Field(default=None, min_length=1, max_length=255)
    inherit: bool | None = None
    force_inheritance: bool | None = None
    settings: dict[SettingKey, SettingIn] | None = Field(
        default=None, max_length=500, json_schema_extra=CLOSED,
        description="replaces the whole document")
    set: dict[SettingKey, SettingIn] = Field(
        default_factory=dict, max_length=500, json_schema_extra=CLOSED,
        description="settings to add or change")
    unset: list[SettingKey] = Field(default_factory=list, max_length=500,
                                    description="settings to remove (unknown: 422)")
    lock: list[SettingKey] = Field(default_factory=list, max_length=500,
                                   description="existing settings to lock (unknown: 422)")
    unlock: list[SettingKey] = Field(default_factory=list, max_length=500,
                                     description="existing settings to unlock (unknown: 422)")


class ProfileIn(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    revision: int | None = Revision
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher wins within the policy")
    active: bool = True
    conditions: Conditions = Field(default_factory=Conditions)
    settings: dict[SettingKey, SettingIn] = Field(
        default_factory=dict, max_length=500, json_schema_extra=CLOSED)


class ProfilePatch(Strict):
    revision: int | None = Revision
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    active: bool | None = None
    conditions: Conditions | None = None
    settings: dict[SettingKey, SettingIn] | None = Field(
        default=None, max_length=500, json_schema_extra=CLOSED,
        description="replaces the whole fragment")
    set: dict[SettingKey, SettingIn] = Field(
        default_factory=dict, max_length=500, json_schema_extra=CLOSED)
    unset: list[SettingKey] = Field(default_factory=list, max_length=500)


class ProfileOut(BaseModel):
    id: int
    name: str
    priority: int
    active: bool
    conditions: dict[str, Any]
    settings: dict[str, SettingOut]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, v: ProfileView) -> ProfileOut:
        return cls(id=v.id, name=v.name, priority=v.priority, active=v.active, conditions=v.conditions,
                   settings=settings_out(v.settings), created_at=v.created_at, updated_at=v.updated_at)


class ProfileList(BaseModel):
    items: list[ProfileOut]


class PolicyOut(BaseModel):
    id: int
    group_id: int
    name: str
    active: bool
    inherit: bool
    force_inheritance: bool
    revision: int
    settings: dict[str, SettingOut]
    profiles: list[ProfileOut]
    created_at: datetime
    updated_at: datetime
    updated_by: str | None

    @classmethod
    def of(cls, v: PolicyView) -> PolicyOut:
        return cls(id=v.id, group_id=v.group_id, name=v.name, active=v.active, inherit=v.inherit,
                   force_inheritance=v.force_inheritance, revision=v.revision,
                   settings=settings_out(v.settings),
                   profiles=[ProfileOut.of(p) for p in v.profiles], created_at=v.created_at,
                   updated_at=v.updated_at, updated_by=v.updated_by)


class PolicyList(BaseModel):
    items: list[PolicyOut]


class PolicyListQuery(Strict):
    group: int | None = Field(default=None, ge=1, le=2**62, description="the policy of this group")


class TagsIn(Strict):
    tags: list[Tag] = Field(max_length=32)


class TagsOut(BaseModel):
    device_id: int
    tags: list[str]


class EffectiveSetting(SettingOut):
    source: str = Field(description='"policy:ID" or "profile:ID/NAME": what set it')


class ContributorOut(BaseModel):
    kind: str
    policy_id: int
    group_id: int
    name: str
    settings: int = Field(description="how many effective settings it set")

    @classmethod
    def of(cls, c: Contributor) -> ContributorOut:
        return cls(kind=c.kind, policy_id=c.policy_id, group_id=c.group_id, name=c.name, settings=c.settings)


class DevicePolicyOut(BaseModel):
    device_id: int
    group_id: int | None
    desired_version: str = Field(description='"" when no policy applies')
    applied_version: str | None = Field(description="what the device last reported applied")
    applied_at: datetime | None
    in_sync: bool
    tags: list[str]
    settings: dict[str, EffectiveSetting]
    contributors: list[ContributorOut]
    local_settings: dict[str, Any] | None = Field(description="as the device last reported them")
    applied_settings: dict[str, Any] | None = Field(
        description="unlocked policy values < local settings < locked values (null: no local settings known)")

    @classmethod
    def of(cls, v: DeviceView) -> DevicePolicyOut:
        return cls(
            device_id=v.device_id, group_id=v.group_id, desired_version=v.desired_version,
            applied_version=v.applied_version, applied_at=v.applied_at,
            in_sync=(v.applied_version or "") == v.desired_version, tags=v.tags,
            settings={k: EffectiveSetting(value=s.value, locked=s.locked, source=v.sources.get(k, ""))
                      for k, s in v.settings.items()},
            contributors=[ContributorOut.of(c) for c in v.contributors],
            local_settings=v.local_settings, applied_settings=v.applied_settings,
        )
