"""How the simulated device answers each command (pure state machine; the end-to-end tests drive
the same code against the real server)."""

from __future__ import annotations

import plistlib
import random
import uuid
from datetime import datetime
from typing import Any

import pytest

from mdm.ios import enrollment_profile as ep
from mdm.sim import behaviour as B
from mdm.sim.facts import HardwareFacts


def _state(**kw: Any) -> B.DeviceState:
    return B.DeviceState(facts=HardwareFacts.generate(random.Random(7)), **kw)


def _cmd(request: str, **keys: Any) -> dict[str, Any]:
    return {"CommandUUID": str(uuid.uuid4()).upper(), "Command": {"RequestType": request, **keys}}


def _ask(state: B.DeviceState, request: str, **keys: Any) -> dict[str, Any]:
    msg = _cmd(request, **keys)
    out = B.answer(state, msg)
    assert out["UDID"] == state.facts.udid and out["CommandUUID"] == msg["CommandUUID"]
    plistlib.dumps(out)  # every answer must serialise as a plist
    return out


def _profile(identifier: str = "com.example.wifi", *, payloads: list[dict[str, Any]] | None = None) -> bytes:
    return ep.serialize(
        {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": identifier,
            "PayloadUUID": ep.new_uuid(),
            "PayloadDisplayName": "Corporate Wi-Fi",
            "PayloadContent": payloads
            if payloads is not None
            else [
                {
                    "PayloadType": "com.apple.wifi.managed",
                    "PayloadVersion": 1,
                    "PayloadIdentifier": identifier + ".p",
                    "PayloadUUID": ep.new_uuid(),
                    "SSID_STR": "corp",
                    "EncryptionType": "WPA2",
                }
            ],
        }
    )


def test_facts_look_real() -> None:
    f = HardwareFacts.generate(random.Random(1))
    assert len(f.serial_number) == 10 and f.serial_number.isalnum()
    assert f.udid.startswith("0000") and len(f.udid) == 25 and f.udid[8] == "-"
    assert (f.os_version, f.build_version) == ("17.5.1", "21F90")
    if f.cellular:
        digits = f.imei.replace(" ", "")
        assert len(digits) == 15 and digits.isdigit()
        total = sum(int(d) if i % 2 == 0 else sum(divmod(int(d) * 2, 10)) for i, d in enumerate(digits))
        assert total % 10 == 0  # Luhn


def test_device_information_answers_the_queries_asked() -> None:
    state = _state()
    state.facts.cellular = True
    state.facts.imei = "35 328208 123456 7"
    out = _ask(
        state,
        "DeviceInformation",
        Queries=[
            "OSVersion",
            "BuildVersion",
            "SerialNumber",
            "IMEI",
            "Model",
            "ProductName",
            "UDID",
            "WiFiMAC",
            "NoSuchQuery",
        ],
    )
    q = out["QueryResponses"]
    assert out["Status"] == "Acknowledged"
    assert q["OSVersion"] == "17.5.1" and q["BuildVersion"] == "21F90"
    assert q["SerialNumber"] == state.facts.serial_number and q["UDID"] == state.facts.udid
    assert q["IMEI"] == "35 328208 123456 7" and "NoSuchQuery" not in q and "DeviceName" not in q
    # Without the network-information right, network queries are left out.
    state.access_rights = B.ALL_RIGHTS & ~B.R_NETWORK_INFO
    q = _ask(state, "DeviceInformation", Queries=["WiFiMAC", "OSVersion"])["QueryResponses"]
    assert q == {"OSVersion": "17.5.1"}


def test_queries_without_required_keys_are_format_errors() -> None:
    state = _state()
    assert _ask(state, "DeviceInformation")["Status"] == "CommandFormatError"
    assert _ask(state, "DeviceInformation", Queries="OSVersion")["Status"] == "CommandFormatError"
    assert _ask(state, "InstallProfile")["Status"] == "CommandFormatError"
    assert _ask(state, "InstallProfile", Payload="not data")["Status"] == "CommandFormatError"
    assert _ask(state, "ClearPasscode")["Status"] == "CommandFormatError"
    assert _ask(state, "InstallApplication")["Status"] == "CommandFormatError"
    assert _ask(state, "InstallApplication", iTunesStoreID="1")["Status"] == "CommandFormatError"


@pytest.mark.parametrize(
    "message",
    [
        None,
        [],
        {},
        {"CommandUUID": "x"},
        {"Command": {"RequestType": "X"}},
        {"CommandUUID": "x", "Command": {"NoRequestType": 1}},
        {"CommandUUID": 5, "Command": {"RequestType": "ProfileList"}},
    ],
)
def test_malformed_messages_are_command_format_errors(message: Any) -> None:
    state = _state()
    out = B.answer(state, message)
    assert out["Status"] == "CommandFormatError" and out["UDID"] == state.facts.udid


def test_unknown_request_type_is_an_error_with_a_chain() -> None:
    out = _ask(_state(), "MakeCoffee")
    assert out["Status"] == "Error"
    chain = out["ErrorChain"]
    assert chain[0]["ErrorDomain"] == "MCMDMErrorDomain" and chain[0]["ErrorCode"] == 12021
    assert "MakeCoffee" in chain[0]["USEnglishDescription"]


def test_security_info() -> None:
    info = _ask(_state(), "SecurityInfo")["SecurityInfo"]
    assert info["HardwareEncryptionCaps"] == 3 and info["PasscodePresent"] is True


def test_install_profile_is_remembered_and_listed_then_removed() -> None:
    state = _state()
    assert _ask(state, "InstallProfile", Payload=_profile())["Status"] == "Acknowledged"
    listed = _ask(state, "ProfileList")["ProfileList"]
    assert [p["PayloadIdentifier"] for p in listed] == ["com.example.wifi"]
    assert listed[0]["IsManaged"] is True
    assert listed[0]["PayloadContent"][0]["PayloadType"] == "com.apple.wifi.managed"
    assert _ask(state, "RemoveProfile", Identifier="com.example.wifi")["Status"] == "Acknowledged"
    assert _ask(state, "ProfileList")["ProfileList"] == []
    out = _ask(state, "RemoveProfile", Identifier="com.example.wifi")
    assert out["Status"] == "Error" and out["ErrorChain"][0]["ErrorCode"] == 12075


def test_install_profile_errors() -> None:
    state = _state()
    out = _ask(state, "InstallProfile", Payload=b"this is not a profile")
    assert out["Status"] == "Error"
    assert [e["ErrorDomain"] for e in out["ErrorChain"]] == [
        "MCInstallationErrorDomain",
        "MCProfileErrorDomain",
    ]
    second_mdm = _profile(
        payloads=[
            {
                "PayloadType": "com.apple.mdm",
                "PayloadVersion": 1,
                "PayloadIdentifier": "m",
                "PayloadUUID": ep.new_uuid(),
            }
        ]
    )
    assert _ask(state, "InstallProfile", Payload=second_mdm)["ErrorChain"][0]["ErrorCode"] == 12001
    assert state.profiles == {}


def test_certificate_payloads_appear_in_certificate_list(ca_root_der: bytes) -> None:
    state = _state()
    payload = {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": "c",
        "PayloadUUID": ep.new_uuid(),
        "PayloadContent": ca_root_der,
    }
    assert (
        _ask(state, "InstallProfile", Payload=_profile("com.example.certs", payloads=[payload]))["Status"]
        == "Acknowledged"
    )
    certs = _ask(state, "CertificateList")["CertificateList"]
    assert [c["Data"] for c in certs] == [ca_root_der] and certs[0]["IsIdentity"] is False


@pytest.fixture
def ca_root_der(pki_template: Any) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((pki_template / "ca" / "root.pem").read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_apps_install_list_remove_and_redeem() -> None:
    state = _state()
    out = _ask(state, "InstallApplication", iTunesStoreID=1113153706, ManagementFlags=1)
    assert out["Status"] == "Acknowledged" and out["Identifier"] == "com.microsoft.skype.teams"
    assert out["State"] == "Queued"
    installed = {a["Identifier"] for a in _ask(state, "InstalledApplicationList")["InstalledApplicationList"]}
    assert "com.microsoft.skype.teams" in installed and "com.tinyspeck.chatlyio" in installed
    managed = _ask(state, "ManagedApplicationList")["ManagedApplicationList"]
    assert set(managed) == {"com.microsoft.skype.teams"}
    assert managed["com.microsoft.skype.teams"]["Status"] == "Managed"
    only_managed = _ask(state, "InstalledApplicationList", ManagedAppsOnly=True)["InstalledApplicationList"]
    assert [a["Identifier"] for a in only_managed] == ["com.microsoft.skype.teams"]
    # A user-installed app is not the server's to remove.
    out = _ask(state, "RemoveApplication", Identifier="com.tinyspeck.chatlyio")
    assert out["Status"] == "Error" and out["ErrorChain"][0]["ErrorCode"] == 12029
    assert (
        _ask(state, "RemoveApplication", Identifier="com.microsoft.skype.teams")["Status"] == "Acknowledged"
    )
    assert "com.microsoft.skype.teams" not in state.apps
    # Paid app: needs a redemption code first.
    out = _ask(state, "InstallApplication", iTunesStoreID=1333542190)
    assert out["State"] == "NeedsRedemption"
    assert (
        _ask(state, "ApplyRedemptionCode", Identifier="com.other", RedemptionCode="X")["ErrorChain"][0][
            "ErrorCode"
        ]
        == 12028
    )
    assert (
        _ask(state, "ApplyRedemptionCode", Identifier="com.1password.1password", RedemptionCode="ABCD-1234")[
            "Status"
        ]
        == "Acknowledged"
    )
    assert state.apps["com.1password.1password"].managed
    out = _ask(state, "InstallApplication", ManifestURL="http://example.com/app.plist")
    assert out["ErrorChain"][0]["ErrorCode"] == 12034


def test_lock_passcode_and_erase() -> None:
    state = _state()
    assert _ask(state, "DeviceLock")["Status"] == "Acknowledged"
    assert _ask(state, "DeviceLock", Message="Return to IT")["MessageResult"] == "Success"
    wrong = _ask(state, "ClearPasscode", UnlockToken=b"wrong")
    assert wrong["Status"] == "Error" and state.passcode_present
    assert _ask(state, "ClearPasscode", UnlockToken=state.unlock_token)["Status"] == "Acknowledged"
    assert not state.passcode_present
    assert _ask(state, "DeviceLock", Message="x")["MessageResult"] == "NoPasscodeSet"
    assert _ask(state, "EraseDevice")["Status"] == "Acknowledged" and state.wiped


def test_lost_mode_commands_need_supervision_and_lost_mode() -> None:
    state = _state()
    for request in ("DeviceLocation", "PlayLostModeSound"):
        out = _ask(state, request)
        assert out["Status"] == "Error" and out["ErrorChain"][0]["ErrorCode"] == 12067
    assert (
        _ask(state, "EnableLostMode", Message="Lost")["ErrorChain"][-1]["ErrorDomain"]
        == "MCChaperoneErrorDomain"
    )
    state.supervised = True
    assert _ask(state, "EnableLostMode")["Status"] == "CommandFormatError"
    assert _ask(state, "EnableLostMode", Message="Lost")["Status"] == "Acknowledged"
    loc = _ask(state, "DeviceLocation")
    assert loc["Status"] == "Acknowledged" and -90 <= loc["Latitude"] <= 90 and "Timestamp" in loc
    assert _ask(state, "PlayLostModeSound")["Status"] == "Acknowledged"
    assert _ask(state, "DisableLostMode")["Status"] == "Acknowledged" and not state.lost_mode


def test_settings_per_item_results() -> None:
    state = _state()
    out = _ask(
        state,
        "Settings",
        Settings=[
            {"Item": "DataRoaming", "Enabled": True},
            {"Item": "VoiceRoaming", "Enabled": True},
            {"Item": "DeviceName", "DeviceName": "Kiosk"},
            {"Item": "Wallpaper2000"},
        ],
    )
    assert out["Status"] == "Acknowledged"
    assert [s["Status"] for s in out["Settings"]] == ["Acknowledged", "Acknowledged", "Error", "Error"]
    assert state.data_roaming and state.voice_roaming
    info = _ask(state, "DeviceInformation", Queries=["DataRoamingEnabled", "VoiceRoamingEnabled"])
    assert info["QueryResponses"] == {"DataRoamingEnabled": True, "VoiceRoamingEnabled": True}
    assert _ask(state, "Settings", Settings=[{"NoItem": 1}])["Status"] == "CommandFormatError"


def test_busy_device_answers_not_now_except_lock_and_erase() -> None:
    state = _state()
    assert B.answer(state, _cmd("ProfileList"), busy=True)["Status"] == "NotNow"
    assert B.answer(state, _cmd("InstallProfile", Payload=_profile()), busy=True)["Status"] == "NotNow"
    assert state.profiles == {}
    assert B.answer(state, _cmd("DeviceLock"), busy=True)["Status"] == "Acknowledged"


def test_access_rights_are_enforced() -> None:
    state = _state(access_rights=B.R_DEVICE_INFO | B.R_PROFILE_INSPECT)
    out = _ask(state, "EraseDevice")
    assert out["Status"] == "Error" and not state.wiped
    assert _ask(state, "InstallProfile", Payload=_profile())["Status"] == "Error"
    assert _ask(state, "ProfileList")["Status"] == "Acknowledged"


def test_removing_the_mdm_profile_unenrolls() -> None:
    state = _state(mdm_identifier="com.example.enrollment.1")
    assert _ask(state, "RemoveProfile", Identifier="com.example.enrollment.1")["Status"] == "Acknowledged"
    assert state.unenrolled


def test_provisioning_profiles() -> None:
    state = _state()
    data = plistlib.dumps({"Name": "Corp Apps", "UUID": "A1B2", "ExpirationDate": datetime(2030, 1, 1)})
    assert _ask(state, "InstallProvisioningProfile", ProvisioningProfile=data)["Status"] == "Acknowledged"
    assert _ask(state, "ProvisioningProfileList")["ProvisioningProfileList"][0]["UUID"] == "A1B2"
    assert _ask(state, "RemoveProvisioningProfile", UUID="A1B2")["Status"] == "Acknowledged"
    assert _ask(state, "RemoveProvisioningProfile", UUID="A1B2")["Status"] == "Error"
    assert _ask(state, "InstallProvisioningProfile", ProvisioningProfile=b"junk")["Status"] == "Error"


def test_each_request_type_belongs_to_one_handler_family() -> None:
    """The dispatch table merges the families; a RequestType in two would silently shadow one."""
    from mdm.sim import actions, installs, queries

    families = [queries.HANDLERS, actions.HANDLERS, installs.HANDLERS]
    assert sum(len(f) for f in families) == len(B.HANDLERS)
    assert all(B.HANDLERS[name] is handler for f in families for name, handler in f.items())
