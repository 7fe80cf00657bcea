"""The inventory answers of a simulated device (DeviceInformation, ProfileList, app lists...)."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.sim.checks import FormatError, arg, require_rights
from mdm.sim.state import (
    R_APP_MGMT,
    R_APPS_INSPECT,
    R_DEVICE_INFO,
    R_NETWORK_INFO,
    R_PROFILE_INSPECT,
    R_PROV_INSPECT,
    R_RESTRICTIONS,
    R_SECURITY,
    DeviceState,
    Handler,
    InstalledProfile,
)

NETWORK_QUERIES = frozenset(
    {
        "ICCID",
        "BluetoothMAC",
        "WiFiMAC",
        "CurrentCarrierNetwork",
        "SIMCarrierNetwork",
        "SubscriberCarrierNetwork",
        "CarrierSettingsVersion",
        "PhoneNumber",
        "DataRoamingEnabled",
        "VoiceRoamingEnabled",
        "PersonalHotspotEnabled",
        "IsRoaming",
        "SubscriberMCC",
        "SubscriberMNC",
        "CurrentMCC",
        "CurrentMNC",
        "ServiceSubscriptions",
    }
)


def device_information(state: DeviceState) -> dict[str, Any]:
    f = state.facts
    out: dict[str, Any] = {
        "UDID": f.udid,
        "DeviceName": f.device_name,
        "OSVersion": f.os_version,
        "BuildVersion": f.build_version,
        "ModelName": f.model_name,
        "Model": f.model,
        "ModelNumber": f.model_number,
        "ProductName": f.product_name,
        "SerialNumber": f.serial_number,
        "DeviceCapacity": f.capacity_gb,
        "AvailableDeviceCapacity": f.available_gb,
        "BatteryLevel": f.battery_level,
        "IsSupervised": state.supervised,
        "IsMultiUser": False,
        "IsDeviceLocatorServiceEnabled": True,
        "IsActivationLockEnabled": False,
        "IsDoNotDisturbInEffect": False,
        "IsCloudBackupEnabled": True,
        "IsMDMLostModeEnabled": state.lost_mode,
        "DeviceID": f.device_id,
        "EASDeviceIdentifier": f.eas_identifier,
        "AwaitingConfiguration": False,
        "iTunesStoreAccountIsActive": True,
        "TimeZone": state.time_zone,
        "SupportsLOMDevice": False,
        "PINRequiredForDeviceLock": False,
        "PINRequiredForEraseDevice": False,
        "BluetoothMAC": f.bluetooth_mac,
        "WiFiMAC": f.wifi_mac,
        "DataRoamingEnabled": state.data_roaming,
        "VoiceRoamingEnabled": state.voice_roaming,
        "PersonalHotspotEnabled": state.personal_hotspot,
        "IsRoaming": False,
        "OSUpdateSettings": {
            "AutoCheckEnabled": True,
            "BackgroundDownloadEnabled": True,
            "AutomaticOSInstallationEnabled": False,
            "AutomaticAppInstallationEnabled": True,
            "AutomaticSecurityUpdatesEnabled": True,
            "IsDefaultCatalog": True,
            "PerformPeriodicCheck": True,
        },
    }
    if f.cellular:
        out.update(
            {
                "IMEI": f.imei,
                "MEID": f.meid,
                "ModemFirmwareVersion": f.modem_firmware,
                "CellularTechnology": 3,
                "ICCID": f.iccid,
                "PhoneNumber": f.phone_number,
                "CurrentCarrierNetwork": f.carrier,
                "SIMCarrierNetwork": f.carrier,
                "SubscriberCarrierNetwork": f.carrier,
                "CarrierSettingsVersion": "57.0",
                "SubscriberMCC": f.mcc,
                "SubscriberMNC": f.mnc,
                "CurrentMCC": f.mcc,
                "CurrentMNC": f.mnc,
                "ServiceSubscriptions": [
                    {
                        "CarrierSettingsVersion": "57.0",
                        "CurrentCarrierNetwork": f.carrier,
                        "CurrentMCC": f.mcc,
                        "CurrentMNC": f.mnc,
                        "ICCID": f.iccid,
                        "IMEI": f.imei,
                        "IsDataPreferred": True,
                        "IsRoaming": False,
                        "IsVoicePreferred": True,
                        "Label": "Primary",
                        "LabelID": str(f.device_id),
                        "MEID": f.meid,
                        "PhoneNumber": f.phone_number,
                        "Slot": "CTSubscriptionSlotOne",
                    }
                ],
            }
        )
    else:
        out["CellularTechnology"] = 0
    return out


def _device_information(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    queries = arg(cmd, "Queries", "array", required=True)
    if not all(isinstance(q, str) for q in queries):
        raise FormatError("DeviceInformation: Queries must be an array of strings")
    require_rights(state, R_DEVICE_INFO | R_NETWORK_INFO, "DeviceInformation")
    info = device_information(state)
    allowed = {
        q: info[q]
        for q in queries
        if q in info and (state.has(R_NETWORK_INFO) if q in NETWORK_QUERIES else state.has(R_DEVICE_INFO))
    }
    return {"QueryResponses": allowed}


def _security_info(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    require_rights(state, R_SECURITY, "SecurityInfo")
    return {
        "SecurityInfo": {
            "HardwareEncryptionCaps": 3,
            "PasscodePresent": state.passcode_present,
            "PasscodeCompliant": state.passcode_present,
            "PasscodeCompliantWithProfiles": state.passcode_present or not _has_passcode_policy(state),
            "PasscodeLockGracePeriodEnforced": 0,
            "ManagementStatus": {
                "IsUserEnrollment": False,
                "EnrolledViaDEP": False,
                "IsActivationLockManageable": state.supervised,
            },
        }
    }


def _has_passcode_policy(state: DeviceState) -> bool:
    return any(
        p.get("PayloadType") == "com.apple.mobiledevice.passwordpolicy"
        for prof in state.profiles.values()
        for p in prof.plist.get("PayloadContent", [])
    )


def _installed_apps(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    wanted = arg(cmd, "Identifiers", "array")
    managed_only = arg(cmd, "ManagedAppsOnly", "boolean") or False
    require_rights(state, R_APPS_INSPECT, "InstalledApplicationList")
    apps = [
        a.listing()
        for a in state.apps.values()
        if (not wanted or a.identifier in wanted) and (a.managed or not managed_only)
    ]
    return {"InstalledApplicationList": apps}


def _managed_apps(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    wanted = arg(cmd, "Identifiers", "array")
    require_rights(state, R_APP_MGMT, "ManagedApplicationList")
    out = {}
    for app in state.apps.values():
        if app.managed and (not wanted or app.identifier in wanted):
            out[app.identifier] = {
                "Status": "Managed",
                "ManagementFlags": app.management_flags,
                "HasConfiguration": bool(app.configuration),
                "HasFeedback": False,
                "IsValidated": True,
                "ExternalVersionIdentifier": app.external_version,
            }
    for identifier in state.awaiting_redemption:
        if not wanted or identifier in wanted:
            out[identifier] = {
                "Status": "NeedsRedemption",
                "ManagementFlags": 0,
                "HasConfiguration": False,
                "HasFeedback": False,
                "IsValidated": False,
            }
    return {"ManagedApplicationList": out}


def _all_profiles(state: DeviceState) -> list[InstalledProfile]:
    return ([state.enrollment] if state.enrollment else []) + list(state.profiles.values())


def _profile_list(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    managed_only = arg(cmd, "ManagedOnly", "boolean") or False
    require_rights(state, R_PROFILE_INSPECT, "ProfileList")
    return {"ProfileList": [p.listing() for p in _all_profiles(state) if p.managed or not managed_only]}


def _cert_entry(cert: x509.Certificate, identity: bool) -> dict[str, Any]:
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return {
        "CommonName": str(cn[0].value) if cn else cert.subject.rfc4514_string(),
        "Data": cert.public_bytes(serialization.Encoding.DER),
        "IsIdentity": identity,
    }


def _certificate_list(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    managed_only = arg(cmd, "ManagedOnly", "boolean") or False
    require_rights(state, R_PROFILE_INSPECT, "CertificateList")
    out = []
    if state.identity is not None:
        out.append(_cert_entry(state.identity, True))
    for prof in _all_profiles(state):
        if managed_only and not prof.managed:
            continue
        out.extend(_cert_entry(c, False) for c in prof.certificates)
    return {"CertificateList": out}


def _provisioning_list(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    arg(cmd, "ManagedOnly", "boolean")
    require_rights(state, R_PROV_INSPECT, "ProvisioningProfileList")
    return {
        "ProvisioningProfileList": [
            {"Name": p["Name"], "UUID": uuid_, "ExpiryDate": p["ExpirationDate"]}
            for uuid_, p in state.provisioning.items()
        ]
    }


def _restrictions_list(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    require_rights(state, R_RESTRICTIONS, "RestrictionsList")
    per_profile = {}
    for prof in state.profiles.values():
        restrictions = {
            key: {"value": value}
            for p in prof.plist.get("PayloadContent", [])
            if p.get("PayloadType") == "com.apple.applicationaccess"
            for key, value in p.items()
            if not key.startswith("Payload") and isinstance(value, bool)
        }
        if restrictions:
            per_profile[prof.identifier] = {"restrictedBool": restrictions}
    return {"GlobalRestrictions": {"restrictedBool": {}}, "ProfileRestrictions": per_profile}


def _available_updates(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"AvailableOSUpdates": []}


def _update_status(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"OSUpdateStatus": []}


def _app_configuration(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    wanted = arg(cmd, "Identifiers", "array", required=True)
    require_rights(state, R_APP_MGMT, "ManagedApplicationConfiguration")
    return {
        "ApplicationConfigurations": [
            {"Identifier": a.identifier, **({"Configuration": a.configuration} if a.configuration else {})}
            for a in state.apps.values()
            if a.managed and a.identifier in wanted
        ]
    }


HANDLERS: dict[str, Handler] = {
    "DeviceInformation": _device_information,
    "SecurityInfo": _security_info,
    "InstalledApplicationList": _installed_apps,
    "ManagedApplicationList": _managed_apps,
    "ProfileList": _profile_list,
    "CertificateList": _certificate_list,
    "ProvisioningProfileList": _provisioning_list,
    "RestrictionsList": _restrictions_list,
    "AvailableOSUpdates": _available_updates,
    "OSUpdateStatus": _update_status,
    "ManagedApplicationConfiguration": _app_configuration,
}
