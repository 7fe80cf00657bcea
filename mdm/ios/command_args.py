"""Typed arguments of the library commands on iOS (``{"type": ..., "args": {...}}`` in the API).

Unknown keys are refused; every field is optional unless the command cannot work without it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mdm.ios.profiles import Profile
from mdm.ios.profiles.base import Data

SixDigits = Field(default=None, pattern=r"^[0-9]{6}$")


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(Args):
    pass


class BlockArgs(Args):
    message: str | None = Field(default=None, max_length=1000)
    phone_number: str | None = Field(default=None, max_length=64)
    # Find My PIN: macOS only (refused for iOS devices).
    pin: str | None = SixDigits


class WipeArgs(Args):
    preserve_data_plan: bool | None = None
    disallow_proximity_setup: bool | None = None
    # macOS only (refused for iOS devices).
    pin: str | None = SixDigits
    obliteration_behavior: Literal["Default", "DoNotObliterate", "ObliterateWithWarning", "Always"] | None = (
        None
    )


class SoftWipeArgs(Args):
    """What to remove; by default every managed profile and managed app the inventory lists."""

    profiles: list[str] | None = Field(default=None, max_length=500)
    applications: list[str] | None = Field(default=None, max_length=500)


class LostMode(Args):
    message: str | None = Field(default=None, max_length=1000)
    phone_number: str | None = Field(default=None, max_length=64)
    footnote: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _something(self) -> LostMode:
        if not (self.message or self.phone_number):
            raise ValueError("lost mode needs a message or a phone number")
        return self


class LostModeArgs(Args):
    """Locate / Alarm work on a device in lost mode (supervised); ``enable_lost_mode`` first puts
    it in lost mode with this message."""

    enable_lost_mode: LostMode | None = None


class InstallConfProfArgs(Args):
    profile: Profile | None = None
    # A ready .mobileconfig (XML/binary plist, or already CMS-signed), base64.
    mobileconfig_base64: Data | None = None
    # Sign with the `ios` certificate; default: the [ios_commands] sign_profiles setting.
    sign: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> InstallConfProfArgs:
        if (self.profile is None) == (self.mobileconfig_base64 is None):
            raise ValueError("give exactly one of profile or mobileconfig_base64")
        return self


class IdentifierArgs(Args):
    identifier: str = Field(min_length=1, max_length=255)


class InstallProvProfArgs(Args):
    # The .mobileprovision file (CMS-signed plist), base64.
    provisioning_profile: Data

    @field_validator("provisioning_profile")
    @classmethod
    def _der(cls, value: bytes) -> bytes:
        if not value.startswith(b"\x30"):
            raise ValueError("is not a .mobileprovision (a DER CMS structure)")
        return value


class DeleteProvProfArgs(Args):
    uuid: str = Field(min_length=1, max_length=64)


class InstallApplicationArgs(Args):
    """Exactly one source: App Store id, bundle identifier (VPP/App Store), or enterprise manifest."""

    itunes_store_id: int | None = Field(default=None, ge=1, le=2**53)
    identifier: str | None = Field(default=None, min_length=1, max_length=255)
    manifest_url: str | None = Field(default=None, max_length=2048)
    # ManagementFlags: 1 = remove the app when the MDM profile is removed, 4 = no app-data backup.
    remove_with_mdm: bool = True
    prevent_backup: bool = False
    # Take over an app the user installed.
    take_management: bool = False
    # 0 = legacy VPP redemption codes, 1 = VPP app assignment.
    purchase_method: Literal[0, 1] | None = None
    # Managed app configuration (any plist-able dictionary).
    configuration: dict[str, Any] | None = None

    @field_validator("manifest_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("devices fetch the manifest over https:// only")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> InstallApplicationArgs:
        given = [n for n in ("itunes_store_id", "identifier", "manifest_url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of itunes_store_id, identifier or manifest_url")
        return self

    @property
    def management_flags(self) -> int:
        return (1 if self.remove_with_mdm else 0) | (4 if self.prevent_backup else 0)


class RedemptionCodeArgs(Args):
    identifier: str = Field(min_length=1, max_length=255)
    redemption_code: str = Field(min_length=1, max_length=255)


class RoamingArgs(Args):
    voice_roaming: bool | None = None
    data_roaming: bool | None = None

    @model_validator(mode="after")
    def _sensible(self) -> RoamingArgs:
        if self.voice_roaming is None and self.data_roaming is None:
            raise ValueError("give voice_roaming and/or data_roaming")
        if self.voice_roaming is False and self.data_roaming:
            raise ValueError("data roaming cannot be on while voice roaming is off")
        return self


InventoryPart = Literal["device_info", "security", "apps", "managed_apps", "profiles", "certificates"]


class RefreshArgs(Args):
    # Default: every part.
    parts: list[InventoryPart] | None = Field(default=None, min_length=1)
    # DeviceInformation queries; default: a standard set for the device's OS.
    queries: list[str] | None = Field(default=None, min_length=1, max_length=200)
