"""Typed arguments of the library commands on iOS (``{"type": ..., "args": {...}}`` in the API).

Unknown keys are refused; every field is optional unless the command cannot work without it.
Each field carries a description and an example: ``GET /api/v1/command-types?args=true`` publishes
them as JSON Schema (``arg_schema``), and ``mdm command types --args`` prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mdm.core.errors import InvalidArgument
from mdm.ios.profiles import Profile
from mdm.ios.profiles.base import Data


def _find_my_pin() -> Any:
    return Field(default=None, pattern=r"^[0-9]{6}$", examples=["123456"],
                 description="Find My PIN, 6 digits (macOS only: refused for iOS devices)")


_MESSAGE = "This device belongs to ACME Corp: please call +1 555 0100"
_PHONE = "+1 555 0100"


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(Args):
    pass


class BlockArgs(Args):
    message: str | None = Field(default=None, max_length=1000, examples=[_MESSAGE],
                                description="shown on the lock screen")
    phone_number: str | None = Field(default=None, max_length=64, examples=[_PHONE],
                                     description="shown on the lock screen")
    pin: str | None = _find_my_pin()


class WipeArgs(Args):
    preserve_data_plan: bool | None = Field(default=None, examples=[True],
                                            description="keep the cellular data plan (eSIM)")
    disallow_proximity_setup: bool | None = Field(default=None, examples=[True],
                                                  description="no Quick Start from a nearby device")
    pin: str | None = _find_my_pin()
    obliteration_behavior: Literal["Default", "DoNotObliterate", "ObliterateWithWarning", "Always"] | None = (
        Field(default=None, examples=["Default"], description="macOS only (refused for iOS devices)")
    )


class SoftWipeArgs(Args):
    """What to remove; by default every managed profile and managed app the inventory lists."""

    profiles: list[str] | None = Field(default=None, max_length=500, examples=[["com.example.wifi"]],
                                       description="identifiers of the managed profiles to remove")
    applications: list[str] | None = Field(default=None, max_length=500, examples=[["com.example.mail"]],
                                           description="bundle ids of the managed apps to remove")


class LostMode(Args):
    """A message or a phone number (or both) for the lock screen."""

    message: str | None = Field(default=None, max_length=1000, examples=[_MESSAGE])
    phone_number: str | None = Field(default=None, max_length=64, examples=[_PHONE])
    footnote: str | None = Field(default=None, max_length=1000, examples=["ACME Corp IT"])

    @model_validator(mode="after")
    def _something(self) -> LostMode:
        if not (self.message or self.phone_number):
            raise ValueError("lost mode needs a message or a phone number")
        return self


class LostModeArgs(Args):
    """Locate / Alarm work on a device in lost mode (supervised); ``enable_lost_mode`` first puts
    it in lost mode with this message."""

    enable_lost_mode: LostMode | None = Field(
        default=None, examples=[{"message": _MESSAGE}],
        description="put the device in lost mode first, with this lock-screen text (supervised devices)",
    )


class InstallConfProfArgs(Args):
    """Exactly one of profile or mobileconfig_base64."""

    profile: Profile | None = Field(
        default=None,
        examples=[{"identifier": "com.example.wifi", "display_name": "Office Wi-Fi",
                   "payloads": [{"type": "wifi", "ssid": "office", "encryption_type": "WPA2",
                                 "password": "correct horse"}]}],
        description="a profile built from typed payloads (wifi, vpn, email, passcode, ...)",
    )
    mobileconfig_base64: Data | None = Field(
        default=None, examples=["PD94bWwgdmVyc2lvbj0iMS4wIj8+"],
        description="a ready .mobileconfig (XML or binary plist, or already CMS-signed), base64",
    )
    sign: bool | None = Field(
        default=None, examples=[True],
        description="sign with the ios certificate (default: the [ios_commands] sign_profiles setting)",
    )

    @model_validator(mode="after")
    def _one(self) -> InstallConfProfArgs:
        if (self.profile is None) == (self.mobileconfig_base64 is None):
            raise ValueError("give exactly one of profile or mobileconfig_base64")
        return self


class IdentifierArgs(Args):
    identifier: str = Field(
        min_length=1, max_length=255, examples=["com.example.wifi"],
        description="profile identifier (DeleteConfProf) or app bundle id (DeleteApplication)",
    )


class InstallProvProfArgs(Args):
    provisioning_profile: Data = Field(examples=["MIAGCSqGSIb3DQEHAqCA"],
                                       description="the .mobileprovision file (CMS-signed plist), base64")

    @field_validator("provisioning_profile")
    @classmethod
    def _der(cls, value: bytes) -> bytes:
        if not value.startswith(b"\x30"):
            raise ValueError("is not a .mobileprovision (a DER CMS structure)")
        return value


class DeleteProvProfArgs(Args):
    uuid: str = Field(min_length=1, max_length=64, examples=["5C1F2E7A-9D3B-4C8E-A1F0-2B6D8E4C7A91"],
                      description="UUID of the provisioning profile")


class InstallApplicationArgs(Args):
    """Exactly one source: App Store id, bundle identifier (VPP/App Store), or enterprise manifest."""

    itunes_store_id: int | None = Field(default=None, ge=1, le=2**53, examples=[361309726],
                                        description="App Store id")
    identifier: str | None = Field(default=None, min_length=1, max_length=255, examples=["com.example.mail"],
                                   description="bundle id (VPP / App Store)")
    manifest_url: str | None = Field(default=None, max_length=2048,
                                     examples=["https://apps.example.com/mail/manifest.plist"],
                                     description="enterprise app manifest (https:// only)")
    # ManagementFlags: 1 = remove the app when the MDM profile is removed, 4 = no app-data backup.
    remove_with_mdm: bool = Field(default=True, examples=[True],
                                  description="remove the app when the MDM profile is removed")
    prevent_backup: bool = Field(default=False, examples=[True], description="no backup of the app's data")
    take_management: bool = Field(default=False, examples=[True],
                                  description="take over an app the user installed")
    purchase_method: Literal[0, 1] | None = Field(
        default=None, examples=[1], description="0: legacy VPP redemption codes, 1: VPP app assignment"
    )
    configuration: dict[str, Any] | None = Field(
        default=None, examples=[{"ServerURL": "https://mail.example.com"}],
        description="managed app configuration (any plist-able dictionary)",
    )

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
    identifier: str = Field(min_length=1, max_length=255, examples=["com.example.mail"],
                            description="bundle id of the app")
    redemption_code: str = Field(min_length=1, max_length=255, examples=["ABCD1234EFGH"])


class RoamingArgs(Args):
    """voice_roaming and/or data_roaming; data roaming needs voice roaming."""

    voice_roaming: bool | None = Field(default=None, examples=[True])
    data_roaming: bool | None = Field(default=None, examples=[False])

    @model_validator(mode="after")
    def _sensible(self) -> RoamingArgs:
        if self.voice_roaming is None and self.data_roaming is None:
            raise ValueError("give voice_roaming and/or data_roaming")
        if self.voice_roaming is False and self.data_roaming:
            raise ValueError("data roaming cannot be on while voice roaming is off")
        return self


InventoryPart = Literal["device_info", "security", "apps", "managed_apps", "profiles", "certificates"]


class RefreshArgs(Args):
    parts: list[InventoryPart] | None = Field(default=None, min_length=1, examples=[["device_info", "apps"]],
                                              description="inventory parts to refresh (default: every part)")
    queries: list[str] | None = Field(
        default=None, min_length=1, max_length=200, examples=[["OSVersion", "BatteryLevel"]],
        description="DeviceInformation queries (default: a standard set for the device's OS)",
    )


# The arguments of each library command on iOS (None: free-form, see RAW_SCHEMA).
BY_COMMAND: dict[str, type[Args] | None] = {
    "Block": BlockArgs,
    "Unblock": NoArgs,
    "ResetPassword": NoArgs,
    "Wipe": WipeArgs,
    "SoftWipe": SoftWipeArgs,
    "Locate": LostModeArgs,
    "Alarm": LostModeArgs,
    "InstallConfProf": InstallConfProfArgs,
    "DeleteConfProf": IdentifierArgs,
    "InstallProvProf": InstallProvProfArgs,
    "DeleteProvProf": DeleteProvProfArgs,
    "InstallApplication": InstallApplicationArgs,
    "DeleteApplication": IdentifierArgs,
    "EnterRedemptionCode": RedemptionCodeArgs,
    "EditRoamingSettings": RoamingArgs,
    "RefreshDeviceInfo": RefreshArgs,
    "Remove": NoArgs,
    "Raw": None,
}

RAW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "an Apple command dictionary, given verbatim (the service adds CommandUUID); "
    "checked against Apple's published schema for its RequestType",
    "properties": {
        "RequestType": {"type": "string", "description": "the Apple RequestType",
                        "examples": ["DeviceInformation"]},
    },
    "required": ["RequestType"],
    "additionalProperties": True,
    "examples": [{"RequestType": "DeviceInformation", "Queries": ["OSVersion"]}],
}


@cache
def json_schema(command_type: str) -> dict[str, Any] | None:
    """The JSON Schema of a command's arguments on iOS (validation mode), or None for an unknown
    type. Built once per type: the models never change at run time."""
    if command_type not in BY_COMMAND:
        return None
    model = BY_COMMAND[command_type]
    return RAW_SCHEMA if model is None else model.model_json_schema()


M = TypeVar("M", bound=BaseModel)


def _describe(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"unknown argument {where!r}")
            continue
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {message}" if where else message)
    return out


def parse_args(model: type[M], command_type: str, args: Mapping[str, Any]) -> M:
    """``args`` validated by ``model``; InvalidArgument lists every problem."""
    try:
        return model.model_validate(dict(args))
    except ValidationError as exc:
        problems = _describe(exc)
        raise InvalidArgument(f"{command_type}: {'; '.join(problems)}", problems=problems) from None
