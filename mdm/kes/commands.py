"""The KES translation of the command library (DESIGN §3, ``docs/kes-protocol.md`` "Commands"):
library command + arguments -> the agent's JSON command ``{"type", "args"}``, stored as the
command's payload and delivered as is in a sync answer (with the command's GUID as ``id``).

Arguments are validated by one pydantic model per command (unknown keys refused); the model's
JSON Schema is what ``GET /api/v1/command-types?args=true`` publishes for KES. The payload depends
on the arguments only, so a bulk operation translates once for every KES device.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mdm.core.errors import InvalidArgument, Unsupported
from mdm.core.library import BulkKey, DeviceFacts
from mdm.db.models import Device

MASK = "********"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_PACKAGE = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    pass


class LockArgs(_Args):
    message: str | None = Field(default=None, min_length=1, max_length=500,
                                description="shown on the locked screen")


class ResetPasswordArgs(_Args):
    password: str | None = Field(default=None, min_length=4, max_length=64,
                                 description="the new password; none: the user sets one")


class AlarmArgs(_Args):
    duration_seconds: int | None = Field(default=None, ge=1, le=600)


class InstallApkArgs(_Args):
    url: str = Field(min_length=9, max_length=2048, description="https URL of the APK")
    sha256: str = Field(description="SHA-256 of the APK, 64 hex digits")
    package: str | None = Field(default=None, max_length=255, pattern=_PACKAGE)

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.lower().startswith("https://") or len(value) <= len("https://") or any(
            c.isspace() for c in value
        ):
            raise ValueError("must be an https:// URL")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal digits")
        return value.lower()


class RemoveApkArgs(_Args):
    package: str = Field(max_length=255, pattern=_PACKAGE)


# library type -> (KES type, argument model)
COMMANDS: dict[str, tuple[str, type[_Args]]] = {
    "Block": ("lock", LockArgs),
    "Unblock": ("unlock", NoArgs),
    "ResetPassword": ("reset_password", ResetPasswordArgs),
    "Wipe": ("wipe", NoArgs),
    "SoftWipe": ("wipe_corporate", NoArgs),
    "Locate": ("locate", NoArgs),
    "Alarm": ("alarm", AlarmArgs),
    "Mugshot": ("mugshot", NoArgs),
    "InstallApplication": ("install_apk", InstallApkArgs),
    "DeleteApplication": ("remove_apk", RemoveApkArgs),
    "RefreshDeviceInfo": ("inventory", NoArgs),
    "Remove": ("unenroll", NoArgs),
}
KES_TYPES = frozenset(kes for kes, _ in COMMANDS.values())
_SECRETS = frozenset({"password"})


def _same_for_all(facts: DeviceFacts) -> Hashable:
    return None


def _parse(command_type: str, args: dict[str, Any]) -> dict[str, Any]:
    entry = COMMANDS.get(command_type)
    if entry is None:
        raise Unsupported(f"{command_type} has no KES translation", supported=sorted(COMMANDS))
    model = entry[1]
    try:
        parsed = model.model_validate(args or {})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(args)"
        raise InvalidArgument(f"{command_type}: {field}: {first['msg']}", field=field) from None
    return parsed.model_dump(exclude_none=True)


class KesCommandTranslator:
    """``CommandTranslator`` for ``Protocol.KES`` (registered by ``mdm.kes.plugin_sync``)."""

    def translate(self, command_type: str, args: dict[str, Any], device: Device) -> dict[str, Any]:
        clean = _parse(command_type, args)
        return {"type": COMMANDS[command_type][0], "args": clean}

    def public_args(self, command_type: str, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments as the command log shows them: a password is masked."""
        return {k: (MASK if k in _SECRETS and v is not None else v) for k, v in (args or {}).items()}

    def check_args(self, command_type: str, args: dict[str, Any]) -> None:
        _parse(command_type, args)

    def bulk_key(self, command_type: str, args: dict[str, Any]) -> BulkKey | None:
        """The payload depends on the arguments only: one variant for all KES devices."""
        return BulkKey(_same_for_all)

    def arg_schema(self, command_type: str) -> dict[str, Any] | None:
        entry = COMMANDS.get(command_type)
        return None if entry is None else entry[1].model_json_schema()


def delivered_form(guid: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A queued command as a sync answer carries it."""
    return {"id": guid, "type": payload.get("type"), "args": payload.get("args") or {}}
