"""The iOS translation of the command library (DESIGN §3): library command + typed arguments ->
Apple MDM ``Command`` dicts, each validated against Apple's schema before it is queued.

The jobs around it live beside it: ``command_builders`` (one builder per library command),
``command_codec`` (how payloads are stored), ``command_masking`` (what the command log shows),
``command_steps`` (multi-step delivery) and ``profile_signer`` (signing InstallConfProf profiles).
"""

from __future__ import annotations

import plistlib
from collections.abc import Callable, Hashable
from typing import Any

from asn1crypto import cms

from mdm.core.errors import InvalidArgument, Unsupported
from mdm.core.library import BulkKey, DeviceFacts
from mdm.db.models import Device
from mdm.ios import command_args as a
from mdm.ios import schema
from mdm.ios.command_builders import _BUILDERS, Step
from mdm.ios.command_codec import to_json_safe
from mdm.ios.command_masking import public_args
from mdm.ios.command_steps import stored
from mdm.ios.profile_signer import SignedProfiles
from mdm.ios.profiles.base import serialise
from mdm.ios.signing import ProfileSigner, SigningError

__all__ = ["GENERATED_REQUEST_TYPES", "_BUILDERS", "IosCommandTranslator", "platform_of"]

# What each builder reads from the device besides the arguments (command_builders): the platform
# (os_name, model) for all of them; ``has_unlock_token`` for the ClearPasscode ones; Raw nothing
# (validated without a platform). Remove, DeleteConfProf and SoftWipe read the MDM profile
# identifier or the managed items, which may come from the inventory: translated per device.
_PER_DEVICE = frozenset({"Remove", "DeleteConfProf", "SoftWipe"})
_UNLOCK_TOKEN = frozenset({"Unblock", "ResetPassword"})


def _by_platform(facts: DeviceFacts) -> Hashable:
    return platform_of(facts)


def _by_platform_and_token(facts: DeviceFacts) -> Hashable:
    return platform_of(facts), facts.attributes.get("has_unlock_token") is False


def _same_for_all(facts: DeviceFacts) -> Hashable:
    return None

# Stands in for the device's UnlockToken when a ClearPasscode is checked against the schema.
_TOKEN_PLACEHOLDER = b"\x00" * 32

# Every RequestType the translator can generate (Raw aside): the simulator must answer these.
GENERATED_REQUEST_TYPES = frozenset({
    "DeviceLock", "ClearPasscode", "EraseDevice", "RemoveProfile", "RemoveApplication",
    "EnableLostMode", "DeviceLocation", "PlayLostModeSound", "InstallProfile",
    "InstallProvisioningProfile", "RemoveProvisioningProfile", "InstallApplication",
    "ApplyRedemptionCode", "Settings", "DeviceInformation", "SecurityInfo",
    "InstalledApplicationList", "ManagedApplicationList", "ProfileList", "CertificateList",
})


def platform_of(device: Device | DeviceFacts) -> str:
    """The OS name Apple's schema uses (iOS covers iPadOS)."""
    return _platform(device.os_name, device.model)


def _platform(os_name: str | None, model: str | None) -> str:
    name = (os_name or "").lower()
    for needle, os_name in (("mac", "macOS"), ("tvos", "tvOS"), ("watch", "watchOS"),
                            ("vision", "visionOS")):
        if needle in name:
            return os_name
    if not name and "mac" in (model or "").lower():
        return "macOS"
    return "iOS"


class IosCommandTranslator:
    """``CommandTranslator`` for ``Protocol.IOS`` (registered by ``mdm.ios.plugin``)."""

    def __init__(self) -> None:
        self.signer: Callable[[], ProfileSigner] | None = None
        self.sign_by_default = False
        # Signed bytes by (profile digest, signer certificate): a profile sent to the whole fleet
        # is signed once, not once per device.
        self._signed = SignedProfiles()

    def configure_signing(self, signer: Callable[[], ProfileSigner] | None, *, by_default: bool) -> None:
        self.signer = signer
        self.sign_by_default = by_default
        self._signed.clear()

    def translate(self, command_type: str, args: dict[str, Any], device: Device) -> dict[str, Any]:
        build = _BUILDERS.get(command_type)
        if build is None:
            raise Unsupported(f"{command_type} has no iOS translation")
        platform = platform_of(device)
        steps = build(self, args, device, platform)
        for step in steps:
            self._check(command_type, step, None if command_type == "Raw" else platform)
        return stored([to_json_safe(s) for s in steps])

    def public_args(self, command_type: str, args: dict[str, Any]) -> dict[str, Any]:
        return public_args(args)

    def check_args(self, command_type: str, args: dict[str, Any]) -> None:
        """Validate the arguments alone, before a bulk operation is recorded (InvalidArgument)."""
        model = a.BY_COMMAND.get(command_type)
        if model is not None:
            a.parse_args(model, command_type, args)
        elif command_type == "Raw":
            _BUILDERS["Raw"](self, args, Device(os_name=None, model=None, attributes={}, inventory={}), "iOS")

    def bulk_key(self, command_type: str, args: dict[str, Any]) -> BulkKey | None:
        """What the translation depends on, for bulk operations (``CommandTranslator``)."""
        if command_type in _PER_DEVICE:
            return None
        if command_type in _UNLOCK_TOKEN:
            return BulkKey(_by_platform_and_token, attributes=True)
        # Raw is validated without a platform; a type without a builder fails alike everywhere.
        same = command_type == "Raw" or command_type not in _BUILDERS
        return BulkKey(_same_for_all if same else _by_platform)

    def arg_schema(self, command_type: str) -> dict[str, Any] | None:
        """The JSON Schema of the command's arguments (``GET /command-types?args=true``)."""
        return a.json_schema(command_type)

    @staticmethod
    def _check(command_type: str, step: Step, platform: str | None) -> None:
        candidate = dict(step)
        if candidate.get("RequestType") == "ClearPasscode" and "UnlockToken" not in candidate:
            candidate["UnlockToken"] = _TOKEN_PLACEHOLDER
        problems = schema.validate_command(candidate, os_name=platform)
        if not problems:
            return
        request_type = candidate.get("RequestType")
        if any(p.path == "RequestType" and "not supported on" in p.message for p in problems):
            raise Unsupported(f"{command_type}: {request_type} is not supported on {platform} devices")
        texts = [str(p) for p in problems[:20]]
        raise InvalidArgument(
            f"{command_type}: {request_type} does not match Apple's schema: {'; '.join(texts)}",
            problems=texts,
        )

    # ---- profiles ------------------------------------------------------------------------------
    def profile_bytes(self, spec: a.InstallConfProfArgs, platform: str) -> bytes:
        sign = self.sign_by_default if spec.sign is None else spec.sign
        if spec.profile is not None:
            document = spec.profile.to_dict()
            problems = schema.validate_profile(document, os_name=platform)
            if problems:
                texts = [str(p) for p in problems[:20]]
                raise InvalidArgument(
                    f"InstallConfProf: the profile does not match Apple's schema: {'; '.join(texts)}",
                    problems=texts,
                )
            data = serialise(document)
        else:
            assert spec.mobileconfig_base64 is not None
            data = spec.mobileconfig_base64
            if _uploaded_profile(data):
                return data  # already signed: signing again would wrap the signature
        return self._sign(data) if sign else data

    def _sign(self, data: bytes) -> bytes:
        if self.signer is None:
            raise Unsupported("InstallConfProf: profile signing is not configured in this process")
        try:
            signer = self.signer()
        except SigningError as exc:
            raise Unsupported(f"InstallConfProf: cannot sign: {exc}") from None
        return self._signed.sign(data, signer)


def _uploaded_profile(data: bytes) -> bool:
    """Check an uploaded .mobileconfig; True when it is already CMS-signed."""
    signed = data[:1] == b"\x30"
    content = data
    if signed:
        try:
            info = cms.ContentInfo.load(data)
            if info["content_type"].native != "signed_data":
                raise ValueError("not SignedData")
            inner = info["content"]["encap_content_info"]["content"].native
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidArgument(
                f"InstallConfProf: mobileconfig_base64 looks like CMS but cannot be read: {exc}"
            ) from None
        if not isinstance(inner, bytes):
            raise InvalidArgument("InstallConfProf: the signed mobileconfig has no attached content")
        content = inner
    try:
        document = plistlib.loads(content)
    except Exception as exc:  # plistlib raises several types on garbage
        raise InvalidArgument(
            f"InstallConfProf: mobileconfig_base64 is not a property list ({exc})"
        ) from None
    if not isinstance(document, dict):
        raise InvalidArgument("InstallConfProf: a profile is a dictionary at the top level")
    problems = schema.validate_profile(document, unknown_payloads=True)
    if problems:
        texts = [str(p) for p in problems[:20]]
        raise InvalidArgument(
            f"InstallConfProf: the profile does not match Apple's schema: {'; '.join(texts)}", problems=texts
        )
    return signed
