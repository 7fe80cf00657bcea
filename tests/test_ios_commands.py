"""The iOS command translator: every library command (and Raw) becomes Apple commands that
validate against Apple's schema (``mdm/commands/*.yaml``, found by RequestType); bad arguments are
refused with a message naming the problem."""

from __future__ import annotations

import base64
import json
import plistlib
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mdm.core.errors import InvalidArgument, ServiceError, Unsupported
from mdm.core.library import LIBRARY
from mdm.db.models import Device, Protocol
from mdm.ios import schema
from mdm.ios.command_codec import to_json_safe, to_plist_dict
from mdm.ios.command_steps import command_uuid, split_command_uuid, steps_of
from mdm.ios.commands import GENERATED_REQUEST_TYPES, IosCommandTranslator
from mdm.ios.profile_signer import SlotSigner
from mdm.ios.profiles import PasscodePolicy, Profile
from mdm.ios.signing import ProfileSigner, sign_profile

MDM_PROFILE = "com.example.mdm.enrollment.1"
PROFILE_SPEC = {
    "identifier": "com.example.wifi",
    "display_name": "Office Wi-Fi",
    "payloads": [
        {"type": "wifi", "ssid": "office", "encryption_type": "WPA2", "password": "correct horse"},
        {"type": "passcode", "min_length": 6},
    ],
}


def ios_device(**attributes: Any) -> Device:
    return Device(
        protocol=Protocol.IOS.value,
        identifier="00008030-000A1C2E3E88802E",
        os_name="iOS",
        model="iPhone14,2",
        attributes={"mdm_profile_identifier": MDM_PROFILE, **attributes},
        inventory={
            "profiles": {
                "items": [
                    {
                        "PayloadIdentifier": MDM_PROFILE,
                        "IsManaged": True,
                        "payloads": [{"PayloadType": "com.apple.mdm"}],
                    },
                    {"PayloadIdentifier": "com.example.wifi", "IsManaged": True, "payloads": []},
                    {"PayloadIdentifier": "com.user.installed", "IsManaged": False, "payloads": []},
                ]
            },
            "managed_apps": {
                "items": [
                    {"Identifier": "com.example.app", "Status": "Managed"},
                    {"Identifier": "com.example.gone", "Status": "UserRejected"},
                ]
            },
        },
    )


def mac_device() -> Device:
    device = ios_device()
    device.os_name, device.model = "macOS", "MacBookPro18,1"
    return device


@pytest.fixture(scope="module")
def certs_dir(pki_template: Path) -> Path:
    return pki_template / "certs"


@pytest.fixture
def translator(certs_dir: Path) -> IosCommandTranslator:
    t = IosCommandTranslator()
    t.configure_signing(SlotSigner(certs_dir), by_default=False)
    return t


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def provisioning_profile(certs_dir: Path) -> bytes:
    """Shaped like a .mobileprovision: a CMS-signed plist."""
    body = plistlib.dumps({"UUID": "4A4B4C4D-0000-1111-2222-333344445555", "Name": "Team"})
    return sign_profile(body, ProfileSigner.from_slot(certs_dir))


def cases(certs_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    unsigned = Profile.model_validate(PROFILE_SPEC).to_bytes()
    return [
        ("Block", {}),
        ("Block", {"message": "Call IT", "phone_number": "+1 555 0100"}),
        ("Unblock", {}),
        ("ResetPassword", {}),
        ("Wipe", {}),
        ("Wipe", {"preserve_data_plan": True, "disallow_proximity_setup": True}),
        ("SoftWipe", {}),
        ("SoftWipe", {"profiles": ["com.example.vpn"], "applications": ["com.example.other"]}),
        ("Locate", {}),
        ("Locate", {"enable_lost_mode": {"message": "Lost", "phone_number": "+1 555", "footnote": "Reward"}}),
        ("Alarm", {}),
        ("Alarm", {"enable_lost_mode": {"phone_number": "+1 555 0100"}}),
        ("InstallConfProf", {"profile": PROFILE_SPEC}),
        ("InstallConfProf", {"profile": PROFILE_SPEC, "sign": True}),
        ("InstallConfProf", {"mobileconfig_base64": _b64(unsigned)}),
        ("InstallConfProf", {"mobileconfig_base64": _b64(unsigned), "sign": True}),
        ("DeleteConfProf", {"identifier": "com.example.wifi"}),
        ("InstallProvProf", {"provisioning_profile": _b64(provisioning_profile(certs_dir))}),
        ("DeleteProvProf", {"uuid": "4A4B4C4D-0000-1111-2222-333344445555"}),
        ("InstallApplication", {"itunes_store_id": 361309726}),
        (
            "InstallApplication",
            {
                "identifier": "com.example.app",
                "purchase_method": 1,
                "take_management": True,
                "configuration": {"server": "https://example.com", "n": 3, "key": {"__data__": "AQI="}},
            },
        ),
        (
            "InstallApplication",
            {"manifest_url": "https://apps.example.com/app.plist", "prevent_backup": True},
        ),
        ("InstallApplication", {"itunes_store_id": 1, "remove_with_mdm": False, "prevent_backup": True}),
        ("InstallApplication", {"itunes_store_id": 1, "remove_with_mdm": False}),
        ("DeleteApplication", {"identifier": "com.example.app"}),
        ("EnterRedemptionCode", {"identifier": "com.example.app", "redemption_code": "ABCD1234"}),
        ("EditRoamingSettings", {"voice_roaming": True}),
        ("EditRoamingSettings", {"voice_roaming": True, "data_roaming": False}),
        ("RefreshDeviceInfo", {}),
        ("RefreshDeviceInfo", {"parts": ["security", "certificates"]}),
        ("RefreshDeviceInfo", {"parts": ["device_info"], "queries": ["UDID", "OSVersion", "BatteryLevel"]}),
        ("Remove", {}),
        ("Raw", {"RequestType": "ShutDownDevice"}),
        ("Raw", {"RequestType": "DeviceInformation", "Queries": ["UDID"]}),
        (
            "Raw",
            {
                "RequestType": "Settings",
                "Settings": [
                    {"Item": "Wallpaper", "Image": {"__data__": _b64(b"\x89PNG\r\n")}, "Where": 3},
                    {"Item": "DeviceName", "DeviceName": "Alice's iPhone"},
                ],
            },
        ),
        ("Raw", {"RequestType": "ClearPasscode"}),
    ]


def delivered(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """What the channel sends: the stored JSON (as the database returns it), restored to plist."""
    stored = json.loads(json.dumps(payload))
    assert stored == payload
    return [to_plist_dict(step, unlock_token=b"\x01" * 32) for step in steps_of(stored)]


def test_every_ios_library_command_has_a_case(certs_dir: Path) -> None:
    ios_types = {name for name, c in LIBRARY.items() if Protocol.IOS in c.protocols}
    assert {name for name, _ in cases(certs_dir)} == ios_types


def test_every_generated_command_validates_against_apple_schema(
    translator: IosCommandTranslator, certs_dir: Path
) -> None:
    generated: set[str] = set()
    for command_type, args in cases(certs_dir):
        payload = translator.translate(command_type, args, ios_device())
        for command in delivered(payload):
            request_type = command["RequestType"]
            assert schema.schema_file(request_type=request_type).exists()
            problems = schema.validate_command(command, os_name="iOS")
            assert problems == [], (command_type, args, [str(p) for p in problems])
            # Serialisable as the device will receive it.
            plistlib.dumps({"CommandUUID": "X", "Command": command})
            if command_type != "Raw":
                generated.add(request_type)
    # The list the simulator answers is exactly what the translator generates.
    assert generated == GENERATED_REQUEST_TYPES


@pytest.mark.parametrize(
    ("command_type", "args", "expected"),
    [
        (
            "Block",
            {"message": "m", "phone_number": "p"},
            [{"RequestType": "DeviceLock", "Message": "m", "PhoneNumber": "p"}],
        ),
        ("Unblock", {}, [{"RequestType": "ClearPasscode", "UnlockToken": b"\x01" * 32}]),
        ("Wipe", {"preserve_data_plan": False}, [{"RequestType": "EraseDevice", "PreserveDataPlan": False}]),
        (
            "SoftWipe",
            {},
            [
                {"RequestType": "RemoveApplication", "Identifier": "com.example.app"},
                {"RequestType": "RemoveProfile", "Identifier": "com.example.wifi"},
            ],
        ),
        ("Locate", {}, [{"RequestType": "DeviceLocation"}]),
        (
            "Alarm",
            {"enable_lost_mode": {"message": "Lost"}},
            [{"RequestType": "EnableLostMode", "Message": "Lost"}, {"RequestType": "PlayLostModeSound"}],
        ),
        ("DeleteConfProf", {"identifier": "a.b"}, [{"RequestType": "RemoveProfile", "Identifier": "a.b"}]),
        ("DeleteProvProf", {"uuid": "U"}, [{"RequestType": "RemoveProvisioningProfile", "UUID": "U"}]),
        (
            "InstallApplication",
            {"itunes_store_id": 7},
            [{"RequestType": "InstallApplication", "iTunesStoreID": 7, "ManagementFlags": 1}],
        ),
        (
            "InstallApplication",
            {"itunes_store_id": 7, "remove_with_mdm": False},
            [{"RequestType": "InstallApplication", "iTunesStoreID": 7}],
        ),
        (
            "InstallApplication",
            {"manifest_url": "https://x/m.plist", "prevent_backup": True},
            [{"RequestType": "InstallApplication", "ManifestURL": "https://x/m.plist", "ManagementFlags": 5}],
        ),
        (
            "DeleteApplication",
            {"identifier": "com.x"},
            [{"RequestType": "RemoveApplication", "Identifier": "com.x"}],
        ),
        (
            "EnterRedemptionCode",
            {"identifier": "com.x", "redemption_code": "C"},
            [{"RequestType": "ApplyRedemptionCode", "Identifier": "com.x", "RedemptionCode": "C"}],
        ),
        (
            "EditRoamingSettings",
            {"voice_roaming": False, "data_roaming": False},
            [
                {
                    "RequestType": "Settings",
                    "Settings": [
                        {"Item": "VoiceRoaming", "Enabled": False},
                        {"Item": "DataRoaming", "Enabled": False},
                    ],
                }
            ],
        ),
        (
            "RefreshDeviceInfo",
            {"parts": ["security", "managed_apps", "profiles"]},
            [
                {"RequestType": "SecurityInfo"},
                {"RequestType": "ManagedApplicationList"},
                {"RequestType": "ProfileList"},
            ],
        ),
        ("Remove", {}, [{"RequestType": "RemoveProfile", "Identifier": MDM_PROFILE}]),
    ],
)
def test_translation(
    translator: IosCommandTranslator, command_type: str, args: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    assert delivered(translator.translate(command_type, args, ios_device())) == expected


def test_refresh_asks_everything_the_inventory_needs(translator: IosCommandTranslator) -> None:
    steps = delivered(translator.translate("RefreshDeviceInfo", {}, ios_device()))
    assert [s["RequestType"] for s in steps] == [
        "DeviceInformation",
        "SecurityInfo",
        "InstalledApplicationList",
        "ManagedApplicationList",
        "ProfileList",
        "CertificateList",
    ]
    queries = steps[0]["Queries"]
    assert {"UDID", "OSVersion", "BuildVersion", "ProductName", "SerialNumber", "IMEI"} <= set(queries)
    assert "EthernetMAC" not in queries  # not an iOS query


def test_macos_devices_get_macos_keys(translator: IosCommandTranslator) -> None:
    mac = mac_device()
    for command_type, args in (
        ("Block", {"pin": "123456", "message": "m"}),
        ("Wipe", {"pin": "123456", "obliteration_behavior": "DoNotObliterate"}),
        ("RefreshDeviceInfo", {}),
    ):
        for command in delivered(translator.translate(command_type, args, mac)):
            assert schema.validate_command(command, os_name="macOS") == [], command
    queries = delivered(translator.translate("RefreshDeviceInfo", {"parts": ["device_info"]}, mac))[0][
        "Queries"
    ]
    assert "EthernetMAC" in queries and "IMEI" not in queries  # a Mac has no modem
    with pytest.raises(Unsupported, match="DeviceLocation is not supported on macOS"):
        translator.translate("Locate", {}, mac)


@pytest.mark.parametrize(
    ("command_type", "args", "error", "message"),
    [
        ("Block", {"mesage": "x"}, InvalidArgument, "Block: unknown argument 'mesage'"),
        (
            "Block",
            {"pin": "123456"},
            InvalidArgument,
            "Block: pin applies to macOS only; this device runs iOS",
        ),
        ("Block", {"message": 5}, InvalidArgument, "Block: message: Input should be a valid string"),
        ("Unblock", {"token": "x"}, InvalidArgument, "Unblock: unknown argument 'token'"),
        ("Wipe", {"pin": "12345"}, InvalidArgument, "Wipe: pin: String should match pattern"),
        (
            "Wipe",
            {"obliteration_behavior": "Always"},
            InvalidArgument,
            "obliteration_behavior applies to macOS",
        ),
        ("SoftWipe", {"profiles": [MDM_PROFILE]}, InvalidArgument, "is the Remove command"),
        ("Locate", {"enable_lost_mode": {}}, InvalidArgument, "lost mode needs a message or a phone number"),
        ("InstallConfProf", {}, InvalidArgument, "give exactly one of profile or mobileconfig_base64"),
        (
            "InstallConfProf",
            {
                "profile": {
                    **PROFILE_SPEC,
                    "payloads": [{"type": "restrictions", "other": {"allowCamra": False}}],
                }
            },
            InvalidArgument,
            "PayloadContent[0].allowCamra: unknown key (did you mean 'allowCamera'?)",
        ),
        (
            "InstallConfProf",
            {"profile": {**PROFILE_SPEC, "payloads": [{"type": "wifi"}]}},
            InvalidArgument,
            "InstallConfProf: profile.payloads.0.wifi.ssid: Field required",
        ),
        (
            "InstallConfProf",
            {"mobileconfig_base64": _b64(b"not a plist")},
            InvalidArgument,
            "mobileconfig_base64 is not a property list",
        ),
        (
            "InstallConfProf",
            {"mobileconfig_base64": _b64(plistlib.dumps({"PayloadType": "Configuration"}))},
            InvalidArgument,
            "PayloadVersion: missing required key",
        ),
        (
            "InstallConfProf",
            {"mobileconfig_base64": _b64(b"\x30\x03\x02\x01\x01")},
            InvalidArgument,
            "looks like CMS but cannot be read",
        ),
        (
            "InstallConfProf",
            {"mobileconfig_base64": "%%%"},
            InvalidArgument,
            "InstallConfProf: mobileconfig_base64: must be base64",
        ),
        ("DeleteConfProf", {}, InvalidArgument, "DeleteConfProf: identifier: Field required"),
        ("DeleteConfProf", {"identifier": MDM_PROFILE}, InvalidArgument, "use the Remove command"),
        (
            "InstallProvProf",
            {"provisioning_profile": _b64(b"plain")},
            InvalidArgument,
            "not a .mobileprovision",
        ),
        (
            "InstallApplication",
            {},
            InvalidArgument,
            "give exactly one of itunes_store_id, identifier or manifest_url",
        ),
        ("InstallApplication", {"itunes_store_id": 1, "identifier": "a"}, InvalidArgument, "exactly one of"),
        ("InstallApplication", {"manifest_url": "http://x/m.plist"}, InvalidArgument, "https:// only"),
        (
            "InstallApplication",
            {"itunes_store_id": 1, "configuration": {"a": None}},
            InvalidArgument,
            "configuration.a: null cannot be sent",
        ),
        ("EnterRedemptionCode", {"identifier": "a"}, InvalidArgument, "redemption_code: Field required"),
        ("EditRoamingSettings", {}, InvalidArgument, "give voice_roaming and/or data_roaming"),
        (
            "EditRoamingSettings",
            {"voice_roaming": False, "data_roaming": True},
            InvalidArgument,
            "data roaming cannot be on while voice roaming is off",
        ),
        (
            "RefreshDeviceInfo",
            {"parts": ["gps"]},
            InvalidArgument,
            "RefreshDeviceInfo: parts.0: Input should be",
        ),
        (
            "RefreshDeviceInfo",
            {"queries": ["UDID", "Colour"]},
            InvalidArgument,
            "Queries[1]: 'Colour' is not a known value",
        ),
        (
            "RefreshDeviceInfo",
            {"queries": ["EthernetMAC"]},
            InvalidArgument,
            "'EthernetMAC' is not supported on iOS",
        ),
        (
            "RefreshDeviceInfo",
            {"parts": ["security"], "queries": ["UDID"]},
            InvalidArgument,
            "queries need the device_info part",
        ),
        ("Remove", {"force": True}, InvalidArgument, "Remove: unknown argument 'force'"),
        ("Mugshot", {}, Unsupported, "Mugshot has no iOS translation"),
    ],
)
def test_bad_arguments_are_refused_precisely(
    translator: IosCommandTranslator,
    command_type: str,
    args: dict[str, Any],
    error: type[ServiceError],
    message: str,
) -> None:
    with pytest.raises(error) as err:
        translator.translate(command_type, args, ios_device())
    assert message in err.value.message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "Raw: args must be an Apple command dictionary with a RequestType string"),
        ({"RequestType": 3}, "with a RequestType string"),
        ({"RequestType": "DeviceLok"}, "Raw: unknown RequestType 'DeviceLok' (did you mean 'DeviceLock'?)"),
        (
            {"RequestType": "DeviceLock", "Mesage": "x"},
            "Raw: DeviceLock does not match Apple's schema: Mesage: unknown key (did you mean 'Message'?)",
        ),
        ({"RequestType": "DeviceLock", "Message": 1}, "Message: expected <string>, got integer"),
        ({"RequestType": "RemoveProfile"}, "Identifier: missing required key"),
        (
            {"RequestType": "InstallApplication", "iTunesStoreID": 1, "ManagementFlags": 3},
            "ManagementFlags: 3 is not one of [1, 4, 5]",
        ),
        ({"RequestType": "InstallProfile", "Payload": "plain text"}, "Payload: expected <data>, got string"),
        (
            {"RequestType": "InstallProfile", "Payload": {"__data__": "@@"}},
            "Payload: __data__ must be base64",
        ),
        (
            {
                "RequestType": "ScheduleOSUpdate",
                "Updates": [{"InstallAction": "Default", "MaxUserDeferrals": None}],
            },
            "null cannot be sent",
        ),
        ({"RequestType": "DeviceLock", "CommandUUID": "x"}, "the service adds CommandUUID"),
    ],
)
def test_raw_is_validated_against_the_schema_of_its_request_type(
    translator: IosCommandTranslator, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        translator.translate("Raw", args, ios_device())
    assert message in err.value.message


def test_raw_keeps_data_and_dates(translator: IosCommandTranslator) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    args = {"RequestType": "InstallProfile", "Payload": {"__data__": _b64(b"profile")}}
    assert delivered(translator.translate("Raw", args, ios_device())) == [
        {"RequestType": "InstallProfile", "Payload": b"profile"}
    ]
    stored = to_json_safe({"RequestType": "X", "When": when})
    assert to_plist_dict(stored) == {"RequestType": "X", "When": when}


def test_clear_passcode_refused_when_the_device_has_no_unlock_token(translator: IosCommandTranslator) -> None:
    with pytest.raises(Unsupported, match="has not sent an UnlockToken"):
        translator.translate("Unblock", {}, ios_device(has_unlock_token=False))
    # Stored without the secret: the channel adds the token at delivery.
    payload = translator.translate("ResetPassword", {}, ios_device())
    assert payload == {"RequestType": "ClearPasscode"}
    assert to_plist_dict(payload) == {"RequestType": "ClearPasscode"}
    assert to_plist_dict(payload, unlock_token=b"T") == {"RequestType": "ClearPasscode", "UnlockToken": b"T"}


def test_soft_wipe_and_remove_need_to_know_what_is_managed(translator: IosCommandTranslator) -> None:
    bare = Device(protocol=1, identifier="X", os_name="iOS", attributes={}, inventory={})
    with pytest.raises(InvalidArgument, match="no managed profile or application is known"):
        translator.translate("SoftWipe", {}, bare)
    with pytest.raises(Unsupported, match="MDM profile is unknown"):
        translator.translate("Remove", {}, bare)
    # Found through the ProfileList inventory when enrollment did not record it.
    device = ios_device()
    device.attributes = {}
    assert translator.translate("Remove", {}, device) == {
        "RequestType": "RemoveProfile",
        "Identifier": MDM_PROFILE,
    }


def test_json_and_plist_conversions() -> None:
    assert to_plist_dict(
        {"RequestType": "X", "D": {"__data__": "AAE="}, "L": [{"__date__": "2030-01-01T00:00:00"}]}
    ) == {"RequestType": "X", "D": b"\x00\x01", "L": [datetime(2030, 1, 1, tzinfo=UTC)]}
    for bad in ({"D": {"__data__": 5}}, {"D": {"__date__": "tomorrow"}}, {"N": None}, {"F": float("inf")}):
        with pytest.raises(ValueError):
            to_plist_dict({"RequestType": "X", **bad})
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than"):
        to_plist_dict({"RequestType": "X", "deep": deep})


def test_steps_and_command_uuids() -> None:
    assert steps_of({"RequestType": "A"}) == [{"RequestType": "A"}]
    assert steps_of({"Steps": [{"RequestType": "A"}, {"RequestType": "B"}]}) == [
        {"RequestType": "A"},
        {"RequestType": "B"},
    ]
    guid = "0D2E5C6A-1111-4222-8333-944455556666"
    assert command_uuid(guid, 0, 1) == guid
    assert command_uuid(guid, 2, 6) == f"{guid}.2"
    assert split_command_uuid(f"{guid}.2") == (guid, 2)
    assert split_command_uuid(guid) == (guid, 0)


# ---- signing -----------------------------------------------------------------------------------
def _verify_cms(data: bytes, expected_cert: x509.Certificate) -> bytes:
    """Verify an attached CMS SignedData by hand; return its content."""
    info = cms.ContentInfo.load(data)
    signed = info["content"]
    content = signed["encap_content_info"]["content"].native
    signer = signed["signer_infos"][0]
    certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]
    cert = next(c for c in certs if c.serial_number == signer["sid"].chosen["serial_number"].native)
    assert cert == expected_cert
    attrs = signer["signed_attrs"]
    digest = next(a["values"][0].native for a in attrs if a["type"].native == "message_digest")
    h = hashes.Hash(hashes.SHA256())
    h.update(content)
    assert digest == h.finalize()
    to_verify = attrs.untag().dump()  # [0] IMPLICIT -> SET OF, as signed
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signer["signature"].native, to_verify, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signer["signature"].native, to_verify, ec.ECDSA(hashes.SHA256()))
    assert isinstance(content, bytes)
    return content


def test_install_profile_signed_with_the_ios_certificate(
    translator: IosCommandTranslator, certs_dir: Path
) -> None:
    ios_cert = ProfileSigner.from_slot(certs_dir).certificate
    unsigned = Profile.model_validate(PROFILE_SPEC).to_bytes()
    plain = delivered(translator.translate("InstallConfProf", {"profile": PROFILE_SPEC}, ios_device()))[0]
    assert plain["Payload"] == unsigned
    signed = delivered(
        translator.translate("InstallConfProf", {"profile": PROFILE_SPEC, "sign": True}, ios_device())
    )[0]
    assert _verify_cms(signed["Payload"], ios_cert) == unsigned
    # The configured default applies when the command does not say.
    translator.configure_signing(SlotSigner(certs_dir), by_default=True)
    by_default = delivered(translator.translate("InstallConfProf", {"profile": PROFILE_SPEC}, ios_device()))[
        0
    ]
    assert _verify_cms(by_default["Payload"], ios_cert) == unsigned
    explicit_no = translator.translate(
        "InstallConfProf", {"profile": PROFILE_SPEC, "sign": False}, ios_device()
    )
    assert delivered(explicit_no)[0]["Payload"] == unsigned


def test_signed_once_for_a_fleet_and_resigned_after_a_certificate_change(
    certs_dir: Path, tmp_path: Path
) -> None:
    local = tmp_path / "certs"
    shutil.copytree(certs_dir, local)
    t = IosCommandTranslator()
    t.configure_signing(SlotSigner(local), by_default=True)
    payloads = [t.translate("InstallConfProf", {"profile": PROFILE_SPEC}, ios_device()) for _ in range(20)]
    assert all(p == payloads[0] for p in payloads)
    assert len(t._signed) == 1  # one signature for twenty devices
    # `mdm certs set -t ios`: another certificate in the slot -> new signatures with it.
    shutil.copy(local / "web.pem", local / "ios.pem")
    shutil.copy(local / "web.key", local / "ios.key")
    after = delivered(t.translate("InstallConfProf", {"profile": PROFILE_SPEC}, ios_device()))[0]["Payload"]
    assert _verify_cms(after, x509.load_pem_x509_certificates((local / "web.pem").read_bytes())[0])


def test_uploaded_profiles(translator: IosCommandTranslator, certs_dir: Path) -> None:
    unsigned = Profile(
        identifier="com.example.up", display_name="Up", payloads=[PasscodePolicy(min_length=4)]
    ).to_bytes()
    already = sign_profile(unsigned, ProfileSigner.from_slot(certs_dir))
    # A signed upload goes out as it is, even with sign=True (no signature around a signature).
    out = delivered(
        translator.translate(
            "InstallConfProf", {"mobileconfig_base64": _b64(already), "sign": True}, ios_device()
        )
    )[0]
    assert out["Payload"] == already
    # Payload types without a vendored schema are let through (top level still checked).
    foreign = plistlib.loads(unsigned)
    foreign["PayloadContent"].append(
        {
            "PayloadType": "com.example.custom",
            "PayloadVersion": 1,
            "PayloadIdentifier": "x",
            "PayloadUUID": "Y",
            "Custom": True,
        }
    )
    data = plistlib.dumps(foreign)
    assert (
        delivered(translator.translate("InstallConfProf", {"mobileconfig_base64": _b64(data)}, ios_device()))[
            0
        ]["Payload"]
        == data
    )


def test_signing_not_configured_is_a_clear_error() -> None:
    with pytest.raises(Unsupported, match="profile signing is not configured"):
        IosCommandTranslator().translate(
            "InstallConfProf", {"profile": PROFILE_SPEC, "sign": True}, ios_device()
        )


# ---- contract with the device simulator ----------------------------------------------------------
def test_the_simulator_understands_every_generated_command(
    translator: IosCommandTranslator, certs_dir: Path
) -> None:
    """mdm.sim answers what the translator generates (an Error from device state is fine; a
    CommandFormatError or an unknown RequestType is not)."""
    import random

    sim = pytest.importorskip("mdm.sim.behaviour")
    from mdm.sim.facts import HardwareFacts

    assert set(GENERATED_REQUEST_TYPES) <= set(sim.HANDLERS)
    for command_type, args in cases(certs_dir):
        if command_type == "Raw":
            continue
        for i, command in enumerate(delivered(translator.translate(command_type, args, ios_device()))):
            state = sim.DeviceState(facts=HardwareFacts.generate(random.Random(7)), supervised=True)
            answer = sim.answer(state, {"CommandUUID": f"C-{i}", "Command": command})
            assert answer["Status"] in ("Acknowledged", "Error"), (command_type, command, answer)
            if answer["Status"] == "Error":
                text = str(answer["ErrorChain"])
                assert "Invalid request type" not in text, (command_type, answer)
