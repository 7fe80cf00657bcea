"""How a simulated iOS device answers each MDM command.

``answer(state, message)`` takes the command plist the server sent (``CommandUUID`` + ``Command``)
and returns the result plist the device sends back, updating the device state (installed profiles
and apps, lost mode, passcode, wiped...) the way iOS does. Error codes follow Apple's published
catalogue (MCMDMErrorDomain, MCProfileErrorDomain, MCInstallationErrorDomain, ...).
"""

from __future__ import annotations

import hashlib
import plistlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.sim import profile as profiles
from mdm.sim.facts import HardwareFacts

# AccessRights bits (com.apple.mdm payload).
R_PROFILE_INSPECT, R_PROFILE_INSTALL, R_LOCK, R_ERASE = 1, 2, 4, 8
R_DEVICE_INFO, R_NETWORK_INFO, R_PROV_INSPECT, R_PROV_INSTALL = 16, 32, 64, 128
R_APPS_INSPECT, R_RESTRICTIONS, R_SECURITY, R_SETTINGS, R_APP_MGMT = 256, 512, 1024, 2048, 4096
ALL_RIGHTS = 8191

# Commands a locked/busy device still executes (a locked phone can be locked again or erased).
NEVER_DEFERRED = frozenset({"DeviceLock", "EraseDevice"})

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


class CommandFailed(Exception):
    """The device ran the command and it failed: ``Status = Error`` with an ErrorChain."""

    def __init__(self, *chain: tuple[str, int, str]) -> None:
        super().__init__(chain[0][2])
        self.chain = [
            {
                "ErrorCode": code,
                "ErrorDomain": domain,
                "LocalizedDescription": text,
                "USEnglishDescription": text,
            }
            for domain, code, text in chain
        ]


class FormatError(Exception):
    """The command is malformed (missing or mistyped keys): ``Status = CommandFormatError``."""


@dataclass
class App:
    identifier: str
    name: str
    short_version: str
    version: str
    bundle_size: int
    managed: bool = False
    management_flags: int = 0
    external_version: int = 0
    configuration: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None

    def listing(self) -> dict[str, Any]:
        return {
            "AdHocCodeSigned": False,
            "AppStoreVendable": True,
            "BetaApp": False,
            "BundleSize": self.bundle_size,
            "DeviceBasedVPP": False,
            "DynamicSize": self.bundle_size // 40,
            "ExternalVersionIdentifier": self.external_version,
            "HasUpdateAvailable": False,
            "Identifier": self.identifier,
            "Installing": False,
            "IsAppClip": False,
            "IsValidated": True,
            "Name": self.name,
            "ShortVersion": self.short_version,
            "Version": self.version,
        }


# Apps a user typically has installed before enrolling (not managed).
PREINSTALLED = [
    App(
        "com.microsoft.Office.Outlook",
        "Outlook",
        "4.2422.0",
        "4.2422.0",
        301_015_040,
        external_version=865_312_779,
    ),
    App(
        "com.tinyspeck.chatlyio", "Slack", "24.05.10", "24.05.10.0", 212_000_768, external_version=865_701_330
    ),
    App("us.zoom.videomeetings", "Zoom", "6.0.11", "6.0.11.22939", 160_071_680, external_version=866_101_201),
    App("com.google.Maps", "Google Maps", "6.118.1", "6.118.1.0", 347_504_640, external_version=865_900_112),
]

# A small store catalogue: iTunesStoreID -> (bundle id, name, version, paid).
STORE = {
    586447913: ("com.microsoft.Office.Word", "Microsoft Word", "2.85", False),
    1113153706: ("com.microsoft.skype.teams", "Microsoft Teams", "6.11.1", False),
    310633997: ("net.whatsapp.WhatsApp", "WhatsApp", "24.10.74", False),
    1333542190: ("com.1password.1password", "1Password 8", "8.10.32", True),
}


@dataclass
class InstalledProfile:
    plist: dict[str, Any]
    managed: bool
    signer: x509.Certificate | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)

    @property
    def identifier(self) -> str:
        return str(self.plist["PayloadIdentifier"])

    def listing(self) -> dict[str, Any]:
        p = self.plist
        out: dict[str, Any] = {
            "HasRemovalPasscode": False,
            "IsEncrypted": False,
            "IsManaged": self.managed,
            "PayloadContent": [
                {
                    k: v
                    for k, v in item.items()
                    if k
                    in (
                        "PayloadDescription",
                        "PayloadDisplayName",
                        "PayloadIdentifier",
                        "PayloadType",
                        "PayloadUUID",
                        "PayloadVersion",
                        "PayloadOrganization",
                    )
                }
                for item in p.get("PayloadContent", [])
            ],
            "PayloadIdentifier": p["PayloadIdentifier"],
            "PayloadRemovalDisallowed": bool(p.get("PayloadRemovalDisallowed", False)),
            "PayloadUUID": p["PayloadUUID"],
            "PayloadVersion": p.get("PayloadVersion", 1),
        }
        for key in ("PayloadDescription", "PayloadDisplayName", "PayloadOrganization"):
            if key in p:
                out[key] = p[key]
        if self.signer is not None:
            out["SignerCertificates"] = [self.signer.public_bytes(serialization.Encoding.DER)]
        return out


@dataclass
class DeviceState:
    facts: HardwareFacts
    access_rights: int = ALL_RIGHTS
    supervised: bool = False
    lost_mode: bool = False
    passcode_present: bool = True
    busy: bool = False  # NotNow while set
    busy_polls: int = 0  # NotNow during the next K poll sessions
    wiped: bool = False
    unenrolled: bool = False
    data_roaming: bool = False
    voice_roaming: bool = True
    personal_hotspot: bool = False
    bluetooth: bool = True
    time_zone: str = "Europe/Berlin"
    unlock_token: bytes = field(default_factory=lambda: secrets.token_bytes(180))
    identity: x509.Certificate | None = None
    enrollment: InstalledProfile | None = None
    mdm_identifier: str = ""
    # A re-installed enrollment profile (new identity), applied by the device after the session.
    replacement_enrollment: bytes | None = None
    trusted_roots: list[x509.Certificate] = field(default_factory=list)
    profiles: dict[str, InstalledProfile] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=lambda: {a.identifier: App(**vars(a)) for a in PREINSTALLED})
    provisioning: dict[str, dict[str, Any]] = field(default_factory=dict)
    awaiting_redemption: dict[str, int] = field(default_factory=dict)
    location: tuple[float, float] = (52.520008, 13.404954)
    # (RequestType, CommandUUID, Status) of every answer, for tests and the CLI summary.
    history: list[tuple[str, str, str]] = field(default_factory=list)

    def has(self, right: int) -> bool:
        return bool(self.access_rights & right)


# ---- argument checking ----------------------------------------------------------------------------

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "data": bytes,
    "integer": int,
    "boolean": bool,
    "array": list,
    "dictionary": dict,
    "real": (int, float),
}


def _arg(command: dict[str, Any], key: str, kind: str, *, required: bool = False) -> Any:
    value = command.get(key)
    if value is None:
        if required:
            raise FormatError(f"{command.get('RequestType')}: required key {key} is missing")
        return None
    expected = _TYPES[kind]
    if not isinstance(value, expected) or (kind == "integer" and isinstance(value, bool)):
        raise FormatError(f"{command.get('RequestType')}: {key} must be <{kind}>")
    return value


def _require_rights(state: DeviceState, right: int, request: str) -> None:
    if not state.has(right):
        raise CommandFailed(
            ("MCMDMErrorDomain", 12007, f"The MDM server is not authorized to perform “{request}”.")
        )


def _require_supervised(state: DeviceState, request: str) -> None:
    if not state.supervised:
        raise CommandFailed(
            (
                "MCMDMErrorDomain",
                12078 if state.lost_mode else 12007,
                f"“{request}” is available only on supervised devices.",
            ),
            ("MCChaperoneErrorDomain", 29000, "The device is not supervised."),
        )


# ---- queries ----------------------------------------------------------------------------------------


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
    queries = _arg(cmd, "Queries", "array", required=True)
    if not all(isinstance(q, str) for q in queries):
        raise FormatError("DeviceInformation: Queries must be an array of strings")
    _require_rights(state, R_DEVICE_INFO | R_NETWORK_INFO, "DeviceInformation")
    info = device_information(state)
    allowed = {
        q: info[q]
        for q in queries
        if q in info and (state.has(R_NETWORK_INFO) if q in NETWORK_QUERIES else state.has(R_DEVICE_INFO))
    }
    return {"QueryResponses": allowed}


def _security_info(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    _require_rights(state, R_SECURITY, "SecurityInfo")
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
    wanted = _arg(cmd, "Identifiers", "array")
    managed_only = _arg(cmd, "ManagedAppsOnly", "boolean") or False
    _require_rights(state, R_APPS_INSPECT, "InstalledApplicationList")
    apps = [
        a.listing()
        for a in state.apps.values()
        if (not wanted or a.identifier in wanted) and (a.managed or not managed_only)
    ]
    return {"InstalledApplicationList": apps}


def _managed_apps(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    wanted = _arg(cmd, "Identifiers", "array")
    _require_rights(state, R_APP_MGMT, "ManagedApplicationList")
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
    managed_only = _arg(cmd, "ManagedOnly", "boolean") or False
    _require_rights(state, R_PROFILE_INSPECT, "ProfileList")
    return {"ProfileList": [p.listing() for p in _all_profiles(state) if p.managed or not managed_only]}


def _cert_entry(cert: x509.Certificate, identity: bool) -> dict[str, Any]:
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return {
        "CommonName": str(cn[0].value) if cn else cert.subject.rfc4514_string(),
        "Data": cert.public_bytes(serialization.Encoding.DER),
        "IsIdentity": identity,
    }


def _certificate_list(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    managed_only = _arg(cmd, "ManagedOnly", "boolean") or False
    _require_rights(state, R_PROFILE_INSPECT, "CertificateList")
    out = []
    if state.identity is not None:
        out.append(_cert_entry(state.identity, True))
    for prof in _all_profiles(state):
        if managed_only and not prof.managed:
            continue
        out.extend(_cert_entry(c, False) for c in prof.certificates)
    return {"CertificateList": out}


def _provisioning_list(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    _arg(cmd, "ManagedOnly", "boolean")
    _require_rights(state, R_PROV_INSPECT, "ProvisioningProfileList")
    return {
        "ProvisioningProfileList": [
            {"Name": p["Name"], "UUID": uuid_, "ExpiryDate": p["ExpirationDate"]}
            for uuid_, p in state.provisioning.items()
        ]
    }


def _restrictions_list(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    _require_rights(state, R_RESTRICTIONS, "RestrictionsList")
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


# ---- actions ------------------------------------------------------------------------------------------


def _device_lock(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    message = _arg(cmd, "Message", "string")
    phone = _arg(cmd, "PhoneNumber", "string")
    _arg(cmd, "PIN", "string")
    _require_rights(state, R_LOCK, "DeviceLock")
    if message or phone:
        return {"MessageResult": "Success" if state.passcode_present else "NoPasscodeSet"}
    return {}


def _clear_passcode(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    token = _arg(cmd, "UnlockToken", "data", required=True)
    _require_rights(state, R_LOCK, "ClearPasscode")
    if not secrets.compare_digest(token, state.unlock_token):
        raise CommandFailed(
            ("MCPasscodeErrorDomain", 5013, "The passcode could not be cleared."),
            ("MCKeybagErrorDomain", 37000, "The unlock token is not valid."),
        )
    state.passcode_present = False
    return {}


def _erase_device(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    for key, kind in (
        ("PIN", "string"),
        ("PreserveDataPlan", "boolean"),
        ("DisallowProximitySetup", "boolean"),
        ("ObliterationBehavior", "string"),
        ("ReturnToService", "dictionary"),
    ):
        _arg(cmd, key, kind)
    _require_rights(state, R_ERASE, "EraseDevice")
    state.wiped = True  # takes effect after the acknowledgement is sent
    return {}


def _install_profile(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    data = _arg(cmd, "Payload", "data", required=True)
    _require_rights(state, R_PROFILE_INSTALL, "InstallProfile")
    try:
        signed = profiles.unwrap_signed(
            data, state.trusted_roots, require_signed=False, require_trusted=False
        )
        plist = profiles.load_plist(signed.content)
        certs = [c for _, c in profiles.payload_certificates(plist)]
    except profiles.ProfileError as exc:
        raise CommandFailed(
            ("MCInstallationErrorDomain", 4000, "The profile could not be installed."),
            (exc.domain, exc.code, str(exc)),
        ) from None
    types = [p.get("PayloadType") for p in plist["PayloadContent"]]
    if profiles.MDM_PAYLOAD in types:
        return _replace_enrollment(state, data, plist)
    for payload in plist["PayloadContent"]:
        if payload.get("PayloadType") == profiles.PKCS12_PAYLOAD:
            try:
                certs.append(profiles.identity_from_pkcs12(payload).certificate)
            except profiles.ProfileError as exc:
                raise CommandFailed(
                    ("MCInstallationErrorDomain", 4001, "The profile could not be installed."),
                    (exc.domain, exc.code, str(exc)),
                ) from None
    uuids = [p.get("PayloadUUID") for p in plist["PayloadContent"]]
    if len(set(uuids)) != len(uuids):
        raise CommandFailed(("MCProfileErrorDomain", 1007, "The profile has payloads with the same UUID."))
    identifier = plist["PayloadIdentifier"]
    if state.enrollment is not None and identifier == state.enrollment.identifier:
        raise CommandFailed(("MCInstallationErrorDomain", 4012, "The enrollment profile cannot be updated."))
    state.profiles[identifier] = InstalledProfile(
        plist, managed=True, signer=signed.signer, certificates=certs
    )
    return {}


def _replace_enrollment(state: DeviceState, data: bytes, plist: dict[str, Any]) -> dict[str, Any]:
    """An MDM profile with the installed one's PayloadIdentifier and topic replaces it in place (how
    the server renews the device identity); the device switches identity after this session."""
    mdm = [p for p in plist["PayloadContent"] if p.get("PayloadType") == profiles.MDM_PAYLOAD]
    installed = state.enrollment.plist if state.enrollment is not None else None
    installed_topic = next(
        (p.get("Topic") for p in (installed or {}).get("PayloadContent", [])
         if p.get("PayloadType") == profiles.MDM_PAYLOAD),
        None,
    )
    if plist["PayloadIdentifier"] != state.mdm_identifier or mdm[0].get("Topic") != installed_topic:
        raise CommandFailed(("MCMDMErrorDomain", 12001, "A device can be managed by only one MDM server."))
    try:
        for payload in plist["PayloadContent"]:
            if payload.get("PayloadType") == profiles.PKCS12_PAYLOAD:
                profiles.identity_from_pkcs12(payload)
    except profiles.ProfileError as exc:
        raise CommandFailed(
            ("MCInstallationErrorDomain", 4001, "The profile could not be installed."),
            (exc.domain, exc.code, str(exc)),
        ) from None
    state.replacement_enrollment = data
    return {}


def _remove_profile(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    identifier = _arg(cmd, "Identifier", "string", required=True)
    _require_rights(state, R_PROFILE_INSTALL, "RemoveProfile")
    if identifier == state.mdm_identifier:
        state.unenrolled = True  # the MDM profile goes: the device checks out and stops polling
        return {}
    if identifier not in state.profiles:
        raise CommandFailed(
            ("MCMDMErrorDomain", 12075, f"The profile “{identifier}” is not installed."),
            ("MCInstallationErrorDomain", 4024, "Profile not found."),
        )
    del state.profiles[identifier]
    return {}


def _install_provisioning(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    data = _arg(cmd, "ProvisioningProfile", "data", required=True)
    _require_rights(state, R_PROV_INSTALL, "InstallProvisioningProfile")
    try:
        content = profiles.unwrap_signed(data, [], require_signed=False, require_trusted=False).content
        plist = plistlib.loads(content)
        name, uuid_ = plist["Name"], plist["UUID"]
        expires = plist.get("ExpirationDate", datetime.now(UTC) + timedelta(days=365))
        if not isinstance(name, str) or not isinstance(uuid_, str):
            raise TypeError("Name/UUID")
    except Exception:
        raise CommandFailed(
            ("MCProvisioningProfileErrorDomain", 25000, "The provisioning profile is invalid.")
        ) from None
    state.provisioning[uuid_] = {"Name": name, "ExpirationDate": expires}
    return {}


def _remove_provisioning(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    uuid_ = _arg(cmd, "UUID", "string", required=True)
    _require_rights(state, R_PROV_INSTALL, "RemoveProvisioningProfile")
    if state.provisioning.pop(uuid_, None) is None:
        raise CommandFailed(
            (
                "MCProvisioningProfileErrorDomain",
                25002,
                f"The provisioning profile “{uuid_}” could not be removed.",
            )
        )
    return {}


def _install_application(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    store_id = _arg(cmd, "iTunesStoreID", "integer")
    identifier = _arg(cmd, "Identifier", "string")
    manifest = _arg(cmd, "ManifestURL", "string")
    flags = _arg(cmd, "ManagementFlags", "integer") or 0
    configuration = _arg(cmd, "Configuration", "dictionary")
    attributes = _arg(cmd, "Attributes", "dictionary")
    _arg(cmd, "Options", "dictionary")
    change = _arg(cmd, "ChangeManagementState", "string")
    if store_id is None and identifier is None and manifest is None:
        raise FormatError("InstallApplication needs iTunesStoreID, Identifier or ManifestURL")
    _require_rights(state, R_APP_MGMT, "InstallApplication")
    paid = False
    if manifest is not None:
        url = urlsplit(manifest)
        if url.scheme != "https":
            raise CommandFailed(("MCMDMErrorDomain", 12034, "The manifest URL must use HTTPS."))
        stem = url.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".plist") or "app"
        bundle, name, version = identifier or f"com.enterprise.{stem.lower()}", stem, "1.0"
    elif store_id is not None:
        if store_id not in STORE:
            raise CommandFailed(
                (
                    "MCMDMErrorDomain",
                    12023,
                    f"The iTunes Store ID {store_id} of the application could not be validated.",
                )
            )
        bundle, name, version, paid = STORE[store_id]
    else:
        assert identifier is not None
        known = next((v for v in STORE.values() if v[0] == identifier), None)
        bundle, name, version = (
            identifier,
            known[1] if known else identifier.rsplit(".", 1)[-1],
            (known[2] if known else "1.0"),
        )
        paid = bool(known and known[3])
    existing = state.apps.get(bundle)
    if existing is not None:
        if existing.managed:
            existing.configuration = configuration or existing.configuration
            return {"Identifier": bundle, "State": "Managed"}
        if change == "Managed" and state.supervised:
            existing.managed, existing.management_flags = True, flags
            return {"Identifier": bundle, "State": "Managed"}
        raise CommandFailed(("MCMDMErrorDomain", 12025, f"The app “{bundle}” is already installed."))
    if paid:
        state.awaiting_redemption[bundle] = store_id or 0
        return {"Identifier": bundle, "State": "NeedsRedemption"}
    size = 20_000_000 + int.from_bytes(hashlib.sha256(bundle.encode()).digest()[:3], "big") * 10
    state.apps[bundle] = App(
        bundle,
        name,
        version,
        version,
        size,
        managed=True,
        management_flags=flags,
        external_version=store_id or 0,
        configuration=configuration,
        attributes=attributes,
    )
    return {"Identifier": bundle, "State": "Queued"}


def _remove_application(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    identifier = _arg(cmd, "Identifier", "string", required=True)
    _require_rights(state, R_APP_MGMT, "RemoveApplication")
    app = state.apps.get(identifier)
    if app is None or not app.managed:
        if state.awaiting_redemption.pop(identifier, None) is not None:
            return {}
        raise CommandFailed(("MCMDMErrorDomain", 12029, f"The app “{identifier}” is not managed."))
    del state.apps[identifier]
    return {}


def _apply_redemption(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    identifier = _arg(cmd, "Identifier", "string", required=True)
    code = _arg(cmd, "RedemptionCode", "string", required=True)
    _require_rights(state, R_APP_MGMT, "ApplyRedemptionCode")
    if identifier not in state.awaiting_redemption:
        raise CommandFailed(
            ("MCMDMErrorDomain", 12028, f"The app “{identifier}” is not waiting for redemption.")
        )
    if not code.strip() or not code.replace("-", "").isalnum():
        raise CommandFailed(("MCMDMErrorDomain", 12037, "The redemption code is not valid."))
    store_id = state.awaiting_redemption.pop(identifier)
    _, name, version, _ = STORE.get(store_id, (identifier, identifier, "1.0", True))
    state.apps[identifier] = App(
        identifier, name, version, version, 48_000_000, managed=True, external_version=store_id
    )
    return {}


def _settings(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    items = _arg(cmd, "Settings", "array", required=True)
    if not all(isinstance(i, dict) and isinstance(i.get("Item"), str) for i in items):
        raise FormatError("Settings: every entry needs an Item string")
    _require_rights(state, R_SETTINGS, "Settings")
    results = []
    for item in items:
        results.append(_one_setting(state, item))
    return {"Settings": results}


def _one_setting(state: DeviceState, item: dict[str, Any]) -> dict[str, Any]:
    name = item["Item"]
    flags = {
        "DataRoaming": "data_roaming",
        "VoiceRoaming": "voice_roaming",
        "PersonalHotspot": "personal_hotspot",
        "Bluetooth": "bluetooth",
    }

    def failed(domain: str, code: int, text: str) -> dict[str, Any]:
        return {
            "Item": name,
            "Status": "Error",
            "ErrorChain": [
                {
                    "ErrorCode": code,
                    "ErrorDomain": domain,
                    "LocalizedDescription": text,
                    "USEnglishDescription": text,
                }
            ],
        }

    if name in flags:
        enabled = item.get("Enabled")
        if not isinstance(enabled, bool):
            return failed("MCSettingsErrorDomain", 28000, f"{name}: Enabled must be a boolean.")
        if name == "Bluetooth" and not state.supervised:
            return failed("MCChaperoneErrorDomain", 29000, "The device is not supervised.")
        if name == "VoiceRoaming" and not enabled:
            state.data_roaming = False  # turning voice roaming off also turns data roaming off
        setattr(state, flags[name], enabled)
    elif name == "DeviceName":
        value = item.get("DeviceName")
        if not isinstance(value, str) or not value:
            return failed("MCSettingsErrorDomain", 28000, "DeviceName must be a non-empty string.")
        if not state.supervised:
            return failed("MCChaperoneErrorDomain", 29000, "The device is not supervised.")
        state.facts.device_name = value
    elif name == "TimeZone":
        value = item.get("TimeZone")
        if not isinstance(value, str) or "/" not in value:
            return failed("MCSettingsErrorDomain", 28000, "TimeZone must be an Olson time zone name.")
        state.time_zone = value
    elif name == "ApplicationConfiguration":
        app = state.apps.get(str(item.get("Identifier")))
        if app is None or not app.managed:
            return failed("MCMDMErrorDomain", 12029, f"The app “{item.get('Identifier')}” is not managed.")
        app.configuration = item.get("Configuration") if isinstance(item.get("Configuration"), dict) else None
    else:
        return failed("MCSettingsErrorDomain", 28000, f"Unknown setting item “{name}”.")
    return {"Item": name, "Status": "Acknowledged"}


def _device_location(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    if not state.supervised or not state.lost_mode:
        raise CommandFailed(("MCMDMErrorDomain", 12067, "The device is not in MDM Lost Mode."))
    lat, lon = state.location
    return {
        "Latitude": lat,
        "Longitude": lon,
        "HorizontalAccuracy": 12.0,
        "VerticalAccuracy": 8.0,
        "Altitude": 34.0,
        "Speed": 0.0,
        "Course": -1.0,
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def _play_sound(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    if not state.supervised or not state.lost_mode:
        raise CommandFailed(("MCMDMErrorDomain", 12067, "The device is not in MDM Lost Mode."))
    return {}


def _enable_lost_mode(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    texts = [_arg(cmd, k, "string") for k in ("Message", "PhoneNumber", "Footnote")]
    if not any(texts[:2]):
        raise FormatError("EnableLostMode needs Message or PhoneNumber")
    _require_supervised(state, "EnableLostMode")
    state.lost_mode = True
    return {}


def _disable_lost_mode(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    _require_supervised(state, "DisableLostMode")
    if not state.lost_mode:
        raise CommandFailed(("MCMDMErrorDomain", 12067, "The device is not in MDM Lost Mode."))
    state.lost_mode = False
    return {}


def _supervised_ack(request: str) -> Callable[[DeviceState, dict[str, Any]], dict[str, Any]]:
    def handler(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
        _require_supervised(state, request)
        return {}

    return handler


def _plain_ack(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    return {}


def _available_updates(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"AvailableOSUpdates": []}


def _update_status(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"OSUpdateStatus": []}


def _app_configuration(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    wanted = _arg(cmd, "Identifiers", "array", required=True)
    _require_rights(state, R_APP_MGMT, "ManagedApplicationConfiguration")
    return {
        "ApplicationConfigurations": [
            {"Identifier": a.identifier, **({"Configuration": a.configuration} if a.configuration else {})}
            for a in state.apps.values()
            if a.managed and a.identifier in wanted
        ]
    }


Handler = Callable[[DeviceState, dict[str, Any]], dict[str, Any]]

HANDLERS: dict[str, Handler] = {
    "DeviceInformation": _device_information,
    "SecurityInfo": _security_info,
    "InstalledApplicationList": _installed_apps,
    "ManagedApplicationList": _managed_apps,
    "ProfileList": _profile_list,
    "CertificateList": _certificate_list,
    "ProvisioningProfileList": _provisioning_list,
    "RestrictionsList": _restrictions_list,
    "DeviceLock": _device_lock,
    "ClearPasscode": _clear_passcode,
    "EraseDevice": _erase_device,
    "InstallProfile": _install_profile,
    "RemoveProfile": _remove_profile,
    "InstallProvisioningProfile": _install_provisioning,
    "RemoveProvisioningProfile": _remove_provisioning,
    "InstallApplication": _install_application,
    "RemoveApplication": _remove_application,
    "ApplyRedemptionCode": _apply_redemption,
    "Settings": _settings,
    "DeviceLocation": _device_location,
    "PlayLostModeSound": _play_sound,
    "EnableLostMode": _enable_lost_mode,
    "DisableLostMode": _disable_lost_mode,
    "RestartDevice": _supervised_ack("RestartDevice"),
    "ShutDownDevice": _supervised_ack("ShutDownDevice"),
    "AvailableOSUpdates": _available_updates,
    "OSUpdateStatus": _update_status,
    "ScheduleOSUpdateScan": _plain_ack,
    "DeclarativeManagement": _plain_ack,
    "ManagedApplicationConfiguration": _app_configuration,
}


def answer(state: DeviceState, message: Any, *, busy: bool = False) -> dict[str, Any]:
    """The result plist for one command message from the server."""
    udid = state.facts.udid
    uuid_ = message.get("CommandUUID") if isinstance(message, dict) else None
    command = message.get("Command") if isinstance(message, dict) else None
    request = command.get("RequestType") if isinstance(command, dict) else None
    base: dict[str, Any] = {"UDID": udid}
    if isinstance(uuid_, str):
        base["CommandUUID"] = uuid_
    if (
        not isinstance(uuid_, str)
        or not uuid_
        or not isinstance(command, dict)
        or not isinstance(request, str)
    ):
        result = {**base, "Status": "CommandFormatError"}
    elif busy and request not in NEVER_DEFERRED:
        result = {**base, "Status": "NotNow"}
    elif request not in HANDLERS:
        text = f"Invalid request type “{request}”."
        result = {
            **base,
            "Status": "Error",
            "ErrorChain": [
                {
                    "ErrorCode": 12021,
                    "ErrorDomain": "MCMDMErrorDomain",
                    "LocalizedDescription": text,
                    "USEnglishDescription": text,
                }
            ],
        }
    else:
        try:
            extra = HANDLERS[request](state, command)
            result = {**base, "Status": "Acknowledged", **extra}
        except FormatError:
            result = {**base, "Status": "CommandFormatError"}
        except CommandFailed as exc:
            result = {**base, "Status": "Error", "ErrorChain": exc.chain}
    state.history.append((str(request), str(uuid_), result["Status"]))
    return result
