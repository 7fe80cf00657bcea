"""The per-command builders of the iOS translator: library command + typed arguments -> the Apple
commands (steps) to store, before schema validation (``commands.IosCommandTranslator``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from mdm.core.errors import InvalidArgument, Unsupported
from mdm.db.models import Device
from mdm.ios import command_args as a
from mdm.ios import schema
from mdm.ios.command_args import parse_args
from mdm.ios.command_codec import from_json

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

Args = dict[str, Any]
Step = dict[str, Any]


class ProfileBytes(TypingProtocol):
    """What the builders need of the translator: the (validated, maybe signed) profile bytes."""

    def profile_bytes(self, spec: a.InstallConfProfArgs, platform: str) -> bytes: ...


Builder = Callable[[ProfileBytes, Args, Device, str], list[Step]]


def _macos_only(command_type: str, platform: str, **given: Any) -> None:
    named = [k for k, v in given.items() if v is not None]
    if named and platform != "macOS":
        raise InvalidArgument(
            f"{command_type}: {', '.join(named)} applies to macOS only; this device runs {platform}"
        )


def _block(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.BlockArgs, "Block", args)
    _macos_only("Block", platform, pin=p.pin)
    step: Step = {"RequestType": "DeviceLock"}
    for key, value in (("Message", p.message), ("PhoneNumber", p.phone_number), ("PIN", p.pin)):
        if value is not None:
            step[key] = value
    return [step]


def _clear_passcode(name: str) -> Builder:
    def build(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
        parse_args(a.NoArgs, name, args)
        if (device.attributes or {}).get("has_unlock_token") is False:
            raise Unsupported(
                f"{name}: the device has not sent an UnlockToken; its passcode cannot be cleared"
            )
        return [{"RequestType": "ClearPasscode"}]

    return build


def _wipe(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
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


def _soft_wipe(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
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
    def build(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
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


def _install_conf_prof(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.InstallConfProfArgs, "InstallConfProf", args)
    return [{"RequestType": "InstallProfile", "Payload": t.profile_bytes(p, platform)}]


def _delete_conf_prof(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.IdentifierArgs, "DeleteConfProf", args)
    if p.identifier == mdm_profile_identifier(device):
        raise InvalidArgument("DeleteConfProf: that is the MDM profile; use the Remove command to unmanage")
    return [{"RequestType": "RemoveProfile", "Identifier": p.identifier}]


def _install_prov_prof(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.InstallProvProfArgs, "InstallProvProf", args)
    return [{"RequestType": "InstallProvisioningProfile", "ProvisioningProfile": p.provisioning_profile}]


def _delete_prov_prof(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.DeleteProvProfArgs, "DeleteProvProf", args)
    return [{"RequestType": "RemoveProvisioningProfile", "UUID": p.uuid}]


def _install_app(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
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
            step["Configuration"] = from_json(p.configuration, "configuration", 1)
        except ValueError as exc:
            raise InvalidArgument(f"InstallApplication: {exc}") from None
    return [step]


def _delete_app(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.IdentifierArgs, "DeleteApplication", args)
    return [{"RequestType": "RemoveApplication", "Identifier": p.identifier}]


def _redemption(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    p = parse_args(a.RedemptionCodeArgs, "EnterRedemptionCode", args)
    return [{"RequestType": "ApplyRedemptionCode", "Identifier": p.identifier,
             "RedemptionCode": p.redemption_code}]


def _roaming(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
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


def _refresh(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
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


def _remove(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    parse_args(a.NoArgs, "Remove", args)
    identifier = mdm_profile_identifier(device)
    if identifier is None:
        raise Unsupported(
            "Remove: the identifier of this device's MDM profile is unknown (not recorded at "
            "enrollment, and no ProfileList lists it yet); run RefreshDeviceInfo first"
        )
    return [{"RequestType": "RemoveProfile", "Identifier": identifier}]


def _raw(t: ProfileBytes, args: Args, device: Device, platform: str) -> list[Step]:
    request_type = args.get("RequestType")
    if not isinstance(request_type, str) or not request_type:
        raise InvalidArgument(
            "Raw: args must be an Apple command dictionary with a RequestType string",
            example={"RequestType": "DeviceInformation", "Queries": ["OSVersion"]},
        )
    if "CommandUUID" in args or "Command" in args:
        raise InvalidArgument("Raw: give the inner Command dictionary; the service adds CommandUUID")
    try:
        command = from_json(args, "", 0)
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
