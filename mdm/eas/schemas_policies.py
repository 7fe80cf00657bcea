"""Request and response bodies of ``/api/v1/eas/policies``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mdm.eas.records import PolicySettings
from mdm.eas.service_policies import PolicyView


class EasPolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64,
                      description="the policy's name in Exchange (any characters)")
    settings: PolicySettings = Field(default_factory=PolicySettings)


class EasPolicyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    settings: PolicySettings = Field(
        description="only the settings given are changed; null: Unlimited / unset")


class EasPolicyListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_vanished: bool = False


class EasPolicyOut(BaseModel):
    name: str
    identity: str
    guid: str | None
    is_default: bool
    settings: dict[str, Any]
    seen_at: datetime
    vanished_at: datetime | None

    @classmethod
    def of(cls, view: PolicyView) -> EasPolicyOut:
        return cls(name=view.name, identity=view.identity, guid=view.guid, is_default=view.is_default,
                   settings=view.settings, seen_at=view.seen_at, vanished_at=view.vanished_at)


class EasPolicyList(BaseModel):
    items: list[EasPolicyOut]
