"""How a simulated device installs and removes profiles, provisioning profiles and apps."""

from __future__ import annotations

import hashlib
import plistlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from mdm.sim import profile as profiles
from mdm.sim.checks import CommandFailed, FormatError, arg, require_rights
from mdm.sim.state import (
    R_APP_MGMT,
    R_PROFILE_INSTALL,
    R_PROV_INSTALL,
    App,
    DeviceState,
    Handler,
    InstalledProfile,
)

# A small store catalogue: iTunesStoreID -> (bundle id, name, version, paid).
STORE = {
    586447913: ("com.microsoft.Office.Word", "Microsoft Word", "2.85", False),
    1113153706: ("com.microsoft.skype.teams", "Microsoft Teams", "6.11.1", False),
    310633997: ("net.whatsapp.WhatsApp", "WhatsApp", "24.10.74", False),
    1333542190: ("com.1password.1password", "1Password 8", "8.10.32", True),
}


def _install_profile(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    data = arg(cmd, "Payload", "data", required=True)
    require_rights(state, R_PROFILE_INSTALL, "InstallProfile")
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
        (
            p.get("Topic")
            for p in (installed or {}).get("PayloadContent", [])
            if p.get("PayloadType") == profiles.MDM_PAYLOAD
        ),
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
    identifier = arg(cmd, "Identifier", "string", required=True)
    require_rights(state, R_PROFILE_INSTALL, "RemoveProfile")
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
    data = arg(cmd, "ProvisioningProfile", "data", required=True)
    require_rights(state, R_PROV_INSTALL, "InstallProvisioningProfile")
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
    uuid_ = arg(cmd, "UUID", "string", required=True)
    require_rights(state, R_PROV_INSTALL, "RemoveProvisioningProfile")
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
    store_id = arg(cmd, "iTunesStoreID", "integer")
    identifier = arg(cmd, "Identifier", "string")
    manifest = arg(cmd, "ManifestURL", "string")
    flags = arg(cmd, "ManagementFlags", "integer") or 0
    configuration = arg(cmd, "Configuration", "dictionary")
    attributes = arg(cmd, "Attributes", "dictionary")
    arg(cmd, "Options", "dictionary")
    change = arg(cmd, "ChangeManagementState", "string")
    if store_id is None and identifier is None and manifest is None:
        raise FormatError("InstallApplication needs iTunesStoreID, Identifier or ManifestURL")
    require_rights(state, R_APP_MGMT, "InstallApplication")
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
    identifier = arg(cmd, "Identifier", "string", required=True)
    require_rights(state, R_APP_MGMT, "RemoveApplication")
    app = state.apps.get(identifier)
    if app is None or not app.managed:
        if state.awaiting_redemption.pop(identifier, None) is not None:
            return {}
        raise CommandFailed(("MCMDMErrorDomain", 12029, f"The app “{identifier}” is not managed."))
    del state.apps[identifier]
    return {}


def _apply_redemption(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    identifier = arg(cmd, "Identifier", "string", required=True)
    code = arg(cmd, "RedemptionCode", "string", required=True)
    require_rights(state, R_APP_MGMT, "ApplyRedemptionCode")
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


HANDLERS: dict[str, Handler] = {
    "InstallProfile": _install_profile,
    "RemoveProfile": _remove_profile,
    "InstallProvisioningProfile": _install_provisioning,
    "RemoveProvisioningProfile": _remove_provisioning,
    "InstallApplication": _install_application,
    "RemoveApplication": _remove_application,
    "ApplyRedemptionCode": _apply_redemption,
}
