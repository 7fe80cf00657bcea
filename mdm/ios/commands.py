"""The iOS translation of the command library (DESIGN §3): library command + typed arguments ->
Apple MDM ``Command`` dicts, each validated against Apple's schema before it is queued.

Stored payload (``Command.payload``, a JSON column):

- one Apple command: the ``Command`` dict itself, ``RequestType`` at the top level;
- several (RefreshDeviceInfo, SoftWipe, Locate/Alarm with ``enable_lost_mode``):
  ``{"Steps": [command, command, ...]}``, delivered one at a time (see ``core.commands.step_done``).

Bytes are stored as ``{"__data__": base64}`` and dates as ``{"__date__": iso8601}``;
``to_plist_dict`` restores them. ``ClearPasscode`` is stored without its ``UnlockToken`` (a device
secret that lives in ``ios_devices``, not in the command log); the channel inserts it at
delivery (``to_plist_dict(step, unlock_token=...)``).

Delivery (for the command channel)::

    uuid, body = outgoing(command, unlock_token=ios_device.unlock_token)   # the step due now
    plist = {"CommandUUID": uuid, "Command": body}
    ...
    guid, _ = split_command_uuid(report["CommandUUID"])                  # find the command
    step = answered_step(command, report["CommandUUID"])                 # None: stale/replayed
    request_type, last = step
    await (core.commands.complete if last else core.commands.step_done)(session, command, ...)

``CommandUUID`` is the command's GUID for a one-step command and ``GUID.N`` for step N.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import math
import plistlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from pydantic import BaseModel, ValidationError

from mdm.core.commands import step_index
from mdm.core.errors import InvalidArgument, Unsupported
from mdm.db.models import Command, Device
from mdm.ios import command_args as a
from mdm.ios import schema
from mdm.ios.profiles.base import serialise
from mdm.ios.signing import SIGNING_SLOT, ProfileSigner, SigningError, sign_profile
from mdm.pki.slots import slot_paths

log = logging.getLogger("mdm.ios.commands")

DATA_MARKER = "__data__"
DATE_MARKER = "__date__"
STEPS = "Steps"
MAX_DEPTH = 64
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

# DeviceInformation queries asked by RefreshDeviceInfo (those the device's OS does not know are
# dropped using Apple's schema).
DEFAULT_QUERIES = (
    "UDID", "DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model", "ProductName",
    "SerialNumber", "DeviceCapacity", "AvailableDeviceCapacity", "BatteryLevel", "IMEI", "MEID",
    "ICCID", "PhoneNumber", "ModemFirmwareVersion", "CellularTechnology", "CurrentCarrierNetwork",
    "SubscriberCarrierNetwork", "IsRoaming", "DataRoamingEnabled", "VoiceRoamingEnabled",
    "WiFiMAC", "BluetoothMAC", "EthernetMAC", "IsSupervised", "IsDeviceLocatorServiceEnabled",
    "IsActivationLockEnabled", "IsCloudBackupEnabled", "LastCloudBackupDate", "IsMDMLostModeEnabled",
    "EASDeviceIdentifier", "TimeZone", "IsMultiUser", "HostName", "LocalHostName",
)

PART_REQUESTS = {
    "device_info": "DeviceInformation",
    "security": "SecurityInfo",
    "apps": "InstalledApplicationList",
    "managed_apps": "ManagedApplicationList",
    "profiles": "ProfileList",
    "certificates": "CertificateList",
}


# ---- JSON-safe storage -------------------------------------------------------------------------
def to_json_safe(value: Any) -> Any:
    """Plist value -> JSON value (bytes and dates become marker dicts)."""
    if isinstance(value, bytes | bytearray):
        return {DATA_MARKER: base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {DATE_MARKER: when.isoformat()}
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    return value


def _decode_marker(value: Mapping[str, Any], path: str) -> Any:
    if DATA_MARKER in value:
        raw = value[DATA_MARKER]
        try:
            if not isinstance(raw, str):
                raise ValueError
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{path}: {DATA_MARKER} must be base64 text") from None
    raw = value[DATE_MARKER]
    try:
        if not isinstance(raw, str):
            raise ValueError
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{path}: {DATE_MARKER} must be an ISO 8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _from_json(value: Any, path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"{path or 'value'}: nested more than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        if len(value) == 1 and (DATA_MARKER in value or DATE_MARKER in value):
            return _decode_marker(value, path)
        return {k: _from_json(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if value is None:
        raise ValueError(f"{path or 'value'}: null cannot be sent in a property list")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: a property-list real must be finite")
    return value


def to_plist_dict(payload: Mapping[str, Any], *, unlock_token: bytes | None = None) -> dict[str, Any]:
    """One stored Apple command -> the dict to put under ``Command`` in the plist for the device.

    Restores bytes and dates; for ``ClearPasscode`` inserts ``unlock_token`` (the device's, from
    its TokenUpdate). Raises ValueError on a malformed payload.
    """
    out = _from_json(payload, "", 0)
    if not isinstance(out, dict):
        raise ValueError("a command payload is a dictionary")
    if out.get("RequestType") == "ClearPasscode" and "UnlockToken" not in out and unlock_token is not None:
        out["UnlockToken"] = bytes(unlock_token)
    return out


# ---- what the command log shows ----------------------------------------------------------------
MASK = "********"
# Argument keys (ours and Apple's) whose values are secrets.
SECRET_KEYS = frozenset({
    "password", "shared_secret", "auth_password", "proxy_password", "challenge", "redemption_code",
    "Password", "UserPassword", "SharedSecret", "AuthPassword", "XAuthPassword", "ProxyPassword",
    "IncomingPassword", "OutgoingPassword", "CertificatePassword", "Challenge", "RedemptionCode",
    "UnlockToken",
})
# Arguments carrying whole files (keys, profiles with passwords inside): shown as size + digest.
BLOB_KEYS = frozenset({"pkcs12", "mobileconfig_base64", "provisioning_profile"})


def _summary(text: str | bytes) -> dict[str, Any]:
    raw = text.encode() if isinstance(text, str) else text
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def mask_secrets(value: Any, key: str | None = None) -> Any:
    """Arguments as stored in the command log and shown by the API: secrets masked, files and
    data reduced to their size and SHA-256 (the payload keeps them for the device)."""
    if key in SECRET_KEYS and value is not None:
        return MASK
    if key in BLOB_KEYS and isinstance(value, str | bytes):
        return _summary(value)
    if isinstance(value, Mapping):
        if len(value) == 1 and DATA_MARKER in value and isinstance(value[DATA_MARKER], str):
            return {DATA_MARKER: _summary(value[DATA_MARKER])}
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


# ---- steps -------------------------------------------------------------------------------------
def steps_of(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Apple commands of a stored payload, in delivery order (one for most commands)."""
    steps = payload.get(STEPS)
    if "RequestType" not in payload and isinstance(steps, list):
        return [dict(s) for s in steps]
    return [dict(payload)]


def command_uuid(guid: str, step: int, total: int) -> str:
    """CommandUUID of a step: the command's GUID, suffixed ``.N`` when it has several steps."""
    return guid if total <= 1 else f"{guid}.{step}"


def split_command_uuid(value: str) -> tuple[str, int]:
    """``guid`` or ``guid.N`` -> (guid, step)."""
    guid, sep, tail = value.rpartition(".")
    if sep and tail.isdigit() and len(tail) <= 4:
        return guid, int(tail)
    return value, 0


def outgoing(command: Command, *, unlock_token: bytes | None = None) -> tuple[str, dict[str, Any]]:
    """(CommandUUID, ``Command`` dict) of the step of ``command`` to deliver now."""
    steps = steps_of(command.payload or {})
    index = min(step_index(command), len(steps) - 1)
    body = to_plist_dict(steps[index], unlock_token=unlock_token)
    return command_uuid(command.guid, index, len(steps)), body


def answered_step(command: Command, reported_uuid: str) -> tuple[str, bool] | None:
    """For a device's report: (RequestType of the step it answers, whether it is the last step),
    or None when ``reported_uuid`` is not the step in flight (a stale or replayed report)."""
    steps = steps_of(command.payload or {})
    index = step_index(command)
    if index >= len(steps) or reported_uuid != command_uuid(command.guid, index, len(steps)):
        return None
    return str(steps[index].get("RequestType", "")), index == len(steps) - 1


# ---- the device's platform ---------------------------------------------------------------------
def platform_of(device: Device) -> str:
    """The OS name Apple's schema uses (iOS covers iPadOS)."""
    name = (device.os_name or "").lower()
    for needle, os_name in (("mac", "macOS"), ("tvos", "tvOS"), ("watch", "watchOS"),
                            ("vision", "visionOS")):
        if needle in name:
            return os_name
    if not name and "mac" in (device.model or "").lower():
        return "macOS"
    return "iOS"


# ---- profile signing ---------------------------------------------------------------------------
class SlotSigner:
    """The ``ios`` slot signer, re-read when its files change (``mdm certs set``, reload)."""

    def __init__(self, certs_dir: Path) -> None:
        self.certs_dir = certs_dir
        self._stamp: tuple[int, int] | None = None
        self._signer: ProfileSigner | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ProfileSigner:
        cert_path, key_path = slot_paths(self.certs_dir, SIGNING_SLOT)
        try:
            stamp = (cert_path.stat().st_mtime_ns, key_path.stat().st_mtime_ns)
        except FileNotFoundError:
            raise SigningError(f"the '{SIGNING_SLOT}' signing certificate or key is missing") from None
        with self._lock:
            if self._signer is None or stamp != self._stamp:
                self._signer = ProfileSigner.from_slot(self.certs_dir, SIGNING_SLOT)
                self._stamp = stamp
            return self._signer


# ---- argument parsing --------------------------------------------------------------------------
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
    try:
        return model.model_validate(dict(args))
    except ValidationError as exc:
        problems = _describe(exc)
        raise InvalidArgument(f"{command_type}: {'; '.join(problems)}", problems=problems) from None


# ---- the translator ----------------------------------------------------------------------------
Step = dict[str, Any]


class IosCommandTranslator:
    """``CommandTranslator`` for ``Protocol.IOS`` (registered by ``mdm.ios.commands_plugin``)."""

    def __init__(self) -> None:
        self.signer: Callable[[], ProfileSigner] | None = None
        self.sign_by_default = False
        # Signed bytes by (profile digest, signer certificate): a profile sent to the whole fleet
        # is signed once, not once per device.
        self._signed: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self._signed_lock = threading.Lock()

    def configure_signing(self, signer: Callable[[], ProfileSigner] | None, *, by_default: bool) -> None:
        self.signer = signer
        self.sign_by_default = by_default
        with self._signed_lock:
            self._signed.clear()

    def translate(self, command_type: str, args: dict[str, Any], device: Device) -> dict[str, Any]:
        build = _BUILDERS.get(command_type)
        if build is None:
            raise Unsupported(f"{command_type} has no iOS translation")
        platform = platform_of(device)
        steps = build(self, args, device, platform)
        for step in steps:
            self._check(command_type, step, None if command_type == "Raw" else platform)
        stored = [to_json_safe(s) for s in steps]
        return stored[0] if len(stored) == 1 else {STEPS: stored}

    def public_args(self, command_type: str, args: dict[str, Any]) -> dict[str, Any]:
        masked = mask_secrets(args)
        return masked if isinstance(masked, dict) else {}

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
        key = (hashlib.sha256(data).digest(), signer.certificate.fingerprint(hashes.SHA256()))
        with self._signed_lock:
            cached = self._signed.get(key)
            if cached is not None:
                self._signed.move_to_end(key)
                return cached
        signed = sign_profile(data, signer)
        with self._signed_lock:
            self._signed[key] = signed
            while len(self._signed) > 64:
                self._signed.popitem(last=False)
        return signed


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


# ---- per-command builders ----------------------------------------------------------------------
Translator = IosCommandTranslator
Args = dict[str, Any]
Builder = Callable[[Translator, Args, Device, str], list[Step]]


def _macos_only(command_type: str, platform: str, **given: Any) -> None:
    named = [k for k, v in given.items() if v is not None]
    if named and platform != "macOS":
        raise InvalidArgument(
            f"{command_type}: {', '.join(named)} applies to macOS only; this device runs {platform}"
        )


def _block(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.BlockArgs, "Block", args)
    _macos_only("Block", platform, pin=p.pin)
    step: Step = {"RequestType": "DeviceLock"}
    for key, value in (("Message", p.message), ("PhoneNumber", p.phone_number), ("PIN", p.pin)):
        if value is not None:
            step[key] = value
    return [step]


def _clear_passcode(name: str) -> Builder:
    def build(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
        parse_args(a.NoArgs, name, args)
        if (device.attributes or {}).get("has_unlock_token") is False:
            raise Unsupported(
                f"{name}: the device has not sent an UnlockToken; its passcode cannot be cleared"
            )
        return [{"RequestType": "ClearPasscode"}]

    return build


def _wipe(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.WipeArgs, "Wipe", args)
    _macos_only("Wipe", platform, pin=p.pin, obliteration_behavior=p.obliteration_behavior)
    step: Step = {"RequestType": "EraseDevice"}
    for key, value in (
        ("PreserveDataPlan", p.preserve_data_plan),
        ("DisallowProximitySetup", p.disallow_proximity_setup),
        ("PIN", p.pin),
        ("ObliterationBehavior", p.obliteration_behavior),
    ):
        if value is not None:
            step[key] = value
    return [step]


def mdm_profile_identifier(device: Device) -> str | None:
    """The installed profile carrying com.apple.mdm: recorded by enrollment/check-in in
    ``attributes["mdm_profile_identifier"]``, else found in the ProfileList inventory."""
    known = (device.attributes or {}).get("mdm_profile_identifier")
    if isinstance(known, str) and known:
        return known
    for item in _inventory_items(device, "profiles"):
        payloads = item.get("payloads") or item.get("PayloadContent") or []
        if any(isinstance(p, dict) and p.get("PayloadType") == "com.apple.mdm" for p in payloads):
            ident = item.get("PayloadIdentifier")
            return ident if isinstance(ident, str) else None
    return None


def _inventory_items(device: Device, part: str) -> list[dict[str, Any]]:
    entry = (device.inventory or {}).get(part) or {}
    items = entry.get("items") if isinstance(entry, dict) else entry
    return [i for i in items or [] if isinstance(i, dict)]


def managed_items(device: Device) -> tuple[list[str], list[str]]:
    """(profile identifiers, app bundle ids) a SoftWipe removes by default, from the inventory."""
    mdm_profile = mdm_profile_identifier(device)
    profiles = []
    for item in _inventory_items(device, "profiles"):
        ident = item.get("PayloadIdentifier")
        payload_types = {p.get("PayloadType") for p in item.get("payloads") or [] if isinstance(p, dict)}
        if (isinstance(ident, str) and ident != mdm_profile and item.get("IsManaged") is not False
                and "com.apple.mdm" not in payload_types):
            profiles.append(ident)
    apps = []
    for item in _inventory_items(device, "managed_apps"):
        ident = item.get("Identifier")
        if isinstance(ident, str) and item.get("Status", "Managed") in ("Managed", "ManagedButUninstalled"):
            apps.append(ident)
    return sorted(set(profiles)), sorted(set(apps))


def _soft_wipe(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.SoftWipeArgs, "SoftWipe", args)
    known_profiles, known_apps = managed_items(device)
    profiles = known_profiles if p.profiles is None else p.profiles
    apps = known_apps if p.applications is None else p.applications
    mdm_profile = mdm_profile_identifier(device)
    if mdm_profile is not None and mdm_profile in profiles:
        raise InvalidArgument("SoftWipe: removing the MDM profile is the Remove command, not a SoftWipe")
    steps: list[Step] = [{"RequestType": "RemoveApplication", "Identifier": i} for i in dict.fromkeys(apps)]
    steps += [{"RequestType": "RemoveProfile", "Identifier": i} for i in dict.fromkeys(profiles)]
    if not steps:
        raise InvalidArgument(
            "SoftWipe: no managed profile or application is known for this device; refresh its "
            "inventory (RefreshDeviceInfo) or name them in profiles/applications"
        )
    return steps


def _lost_mode(name: str, request_type: str) -> Builder:
    def build(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
        p = parse_args(a.LostModeArgs, name, args)
        steps: list[Step] = []
        if p.enable_lost_mode is not None:
            lost: Step = {"RequestType": "EnableLostMode"}
            for key, value in (("Message", p.enable_lost_mode.message),
                               ("PhoneNumber", p.enable_lost_mode.phone_number),
                               ("Footnote", p.enable_lost_mode.footnote)):
                if value is not None:
                    lost[key] = value
            steps.append(lost)
        return [*steps, {"RequestType": request_type}]

    return build


def _install_conf_prof(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.InstallConfProfArgs, "InstallConfProf", args)
    return [{"RequestType": "InstallProfile", "Payload": t.profile_bytes(p, platform)}]


def _delete_conf_prof(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.IdentifierArgs, "DeleteConfProf", args)
    if p.identifier == mdm_profile_identifier(device):
        raise InvalidArgument("DeleteConfProf: that is the MDM profile; use the Remove command to unmanage")
    return [{"RequestType": "RemoveProfile", "Identifier": p.identifier}]


def _install_prov_prof(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.InstallProvProfArgs, "InstallProvProf", args)
    return [{"RequestType": "InstallProvisioningProfile", "ProvisioningProfile": p.provisioning_profile}]


def _delete_prov_prof(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.DeleteProvProfArgs, "DeleteProvProf", args)
    return [{"RequestType": "RemoveProvisioningProfile", "UUID": p.uuid}]


def _install_app(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.InstallApplicationArgs, "InstallApplication", args)
    step: Step = {"RequestType": "InstallApplication"}
    if p.itunes_store_id is not None:
        step["iTunesStoreID"] = p.itunes_store_id
    if p.identifier is not None:
        step["Identifier"] = p.identifier
    if p.manifest_url is not None:
        step["ManifestURL"] = p.manifest_url
    if p.management_flags:
        step["ManagementFlags"] = p.management_flags
    if p.purchase_method is not None:
        step["Options"] = {"PurchaseMethod": p.purchase_method}
    if p.take_management:
        step["ChangeManagementState"] = "Managed"
    if p.configuration is not None:
        try:
            step["Configuration"] = _from_json(p.configuration, "configuration", 1)
        except ValueError as exc:
            raise InvalidArgument(f"InstallApplication: {exc}") from None
    return [step]


def _delete_app(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.IdentifierArgs, "DeleteApplication", args)
    return [{"RequestType": "RemoveApplication", "Identifier": p.identifier}]


def _redemption(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.RedemptionCodeArgs, "EnterRedemptionCode", args)
    return [{"RequestType": "ApplyRedemptionCode", "Identifier": p.identifier,
             "RedemptionCode": p.redemption_code}]


def _roaming(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.RoamingArgs, "EditRoamingSettings", args)
    items = [{"Item": item, "Enabled": value}
             for item, value in (("VoiceRoaming", p.voice_roaming), ("DataRoaming", p.data_roaming))
             if value is not None]
    return [{"RequestType": "Settings", "Settings": items}]


@functools.lru_cache(maxsize=8)
def supported_queries(platform: str) -> tuple[str, ...]:
    """DeviceInformation query names Apple's schema lists for ``platform``."""
    doc = schema.command_document("DeviceInformation")
    queries = next(k for k in doc["payloadkeys"] if k["key"] == "Queries")
    names = []
    for spec in queries["subkeys"][0].get("subkeys") or []:
        entry = (spec.get("supportedOS") or {}).get(platform) or {}
        if str(entry.get("introduced", "")) != "n/a":
            names.append(str(spec["key"]))
    return tuple(names)


def _refresh(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.RefreshArgs, "RefreshDeviceInfo", args)
    parts = list(dict.fromkeys(p.parts or PART_REQUESTS))
    if p.queries is not None and "device_info" not in parts:
        raise InvalidArgument("RefreshDeviceInfo: queries need the device_info part")
    steps: list[Step] = []
    for part in parts:
        step: Step = {"RequestType": PART_REQUESTS[part]}
        if part == "device_info":
            if p.queries is not None:
                step["Queries"] = list(dict.fromkeys(p.queries))
            else:
                known = set(supported_queries(platform))
                step["Queries"] = [q for q in DEFAULT_QUERIES if q in known]
        steps.append(step)
    return steps


def _remove(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    parse_args(a.NoArgs, "Remove", args)
    identifier = mdm_profile_identifier(device)
    if identifier is None:
        raise Unsupported(
            "Remove: the identifier of this device's MDM profile is unknown (not recorded at "
            "enrollment, and no ProfileList lists it yet); run RefreshDeviceInfo first"
        )
    return [{"RequestType": "RemoveProfile", "Identifier": identifier}]


def _raw(t: Translator, args: Args, device: Device, platform: str) -> list[Step]:
    request_type = args.get("RequestType")
    if not isinstance(request_type, str) or not request_type:
        raise InvalidArgument(
            "Raw: args must be an Apple command dictionary with a RequestType string",
            example={"RequestType": "DeviceInformation", "Queries": ["OSVersion"]},
        )
    if "CommandUUID" in args or "Command" in args:
        raise InvalidArgument("Raw: give the inner Command dictionary; the service adds CommandUUID")
    try:
        command = _from_json(args, "", 0)
    except ValueError as exc:
        raise InvalidArgument(f"Raw {request_type}: {exc}") from None
    try:
        schema.command_document(request_type)
    except schema.UnknownSchema as exc:
        raise InvalidArgument(f"Raw: {exc}", known=sorted(schema.request_types())) from None
    return [command]


_BUILDERS: dict[str, Builder] = {
    "Block": _block,
    "Unblock": _clear_passcode("Unblock"),
    "ResetPassword": _clear_passcode("ResetPassword"),
    "Wipe": _wipe,
    "SoftWipe": _soft_wipe,
    "Locate": _lost_mode("Locate", "DeviceLocation"),
    "Alarm": _lost_mode("Alarm", "PlayLostModeSound"),
    "InstallConfProf": _install_conf_prof,
    "DeleteConfProf": _delete_conf_prof,
    "InstallProvProf": _install_prov_prof,
    "DeleteProvProf": _delete_prov_prof,
    "InstallApplication": _install_app,
    "DeleteApplication": _delete_app,
    "EnterRedemptionCode": _redemption,
    "EditRoamingSettings": _roaming,
    "RefreshDeviceInfo": _refresh,
    "Remove": _remove,
    "Raw": _raw,
}
