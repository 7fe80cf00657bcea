"""The validator of Apple's device-management YAML (mdm/ios/schema.py) catches every class of
error it claims to catch, and knows the vendored schema."""

from __future__ import annotations

import filecmp
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from mdm.ios import schema

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "apple-device-management"


def messages(problems: list[schema.Problem]) -> list[str]:
    return [str(p) for p in problems]


# ---- the vendored schema -----------------------------------------------------------------------
def test_vendored_schema_has_licence_and_every_command() -> None:
    assert (schema.SCHEMA_ROOT.parent / "LICENSE.txt").read_text().startswith("Copyright")
    files = sorted(schema.COMMANDS_DIR.glob("*.yaml"))
    assert len(files) >= 60
    declared = set()
    for path in files:
        doc = yaml.safe_load(path.read_text())
        declared.add(doc["payload"]["requesttype"])
    # The regex index agrees with a full YAML parse of every file.
    assert schema.request_types() == declared
    assert {"DeviceLock", "EraseDevice", "InstallProfile", "Settings"} <= declared


@pytest.mark.skipif(not UPSTREAM.exists(), reason="upstream copy of apple/device-management not present")
def test_vendored_files_are_unmodified_copies() -> None:
    pairs = [(p, UPSTREAM / "mdm" / "commands" / p.name) for p in schema.COMMANDS_DIR.glob("*.yaml")]
    pairs += [(p, UPSTREAM / "mdm" / "profiles" / p.name) for p in schema.PROFILES_DIR.glob("*.yaml")]
    pairs.append((schema.SCHEMA_ROOT.parent / "LICENSE.txt", UPSTREAM / "LICENSE.txt"))
    changed = [str(ours) for ours, theirs in pairs if not filecmp.cmp(ours, theirs, shallow=False)]
    assert not changed


def test_schema_file_lookup_by_type() -> None:
    assert schema.schema_file(request_type="DeviceLock").name == "device.lock.yaml"
    assert schema.schema_file(payload_type="com.apple.wifi.managed").name == "com.apple.wifi.managed.yaml"
    with pytest.raises(schema.UnknownSchema):
        schema.schema_file(request_type="NoSuchCommand")
    with pytest.raises(schema.UnknownSchema):
        schema.schema_file(payload_type="com.example.nothing")


# ---- commands: every error class -----------------------------------------------------------------
def test_valid_commands_pass() -> None:
    assert schema.validate_command({"RequestType": "DeviceLock", "Message": "hi"}, os_name="iOS") == []
    assert schema.validate_command({"RequestType": "SecurityInfo"}) == []
    assert (
        schema.validate_command(
            {
                "RequestType": "Settings",
                "Settings": [
                    {"Item": "DataRoaming", "Enabled": True},
                    {"Item": "Wallpaper", "Image": b"\x89PNG", "Where": 3},
                ],
            }
        )
        == []
    )


def test_unknown_request_type_suggests_the_right_one() -> None:
    assert messages(schema.validate_command({"RequestType": "DeviceLok"})) == [
        "RequestType: unknown RequestType 'DeviceLok' (did you mean 'DeviceLock'?)"
    ]
    assert messages(schema.validate_command({"Message": "x"})) == [
        "RequestType: missing required key (a non-empty string)"
    ]
    assert messages(schema.validate_command(["not", "a", "dict"])) == [  # type: ignore[arg-type]
        "expected <dictionary>, got array"
    ]


def test_unknown_key() -> None:
    problems = schema.validate_command({"RequestType": "DeviceLock", "Mesage": "x"})
    assert messages(problems) == ["Mesage: unknown key (did you mean 'Message'?)"]
    nested = schema.validate_command(
        {"RequestType": "InstallApplication", "iTunesStoreID": 1, "Options": {"Purchase": 1}}
    )
    assert messages(nested) == ["Options.Purchase: unknown key (did you mean 'PurchaseMethod'?)"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ({"RequestType": "DeviceLock", "Message": 5}, "Message: expected <string>, got integer"),
        (
            {"RequestType": "InstallApplication", "iTunesStoreID": "12"},
            "iTunesStoreID: expected <integer>, got string",
        ),
        # bool is not an integer in a plist
        (
            {"RequestType": "InstallApplication", "iTunesStoreID": True},
            "iTunesStoreID: expected <integer>, got boolean",
        ),
        (
            {"RequestType": "EraseDevice", "PreserveDataPlan": 1},
            "PreserveDataPlan: expected <boolean>, got integer",
        ),
        (
            {"RequestType": "ClearPasscode", "UnlockToken": "dG9rZW4="},
            "UnlockToken: expected <data>, got string",
        ),
        ({"RequestType": "DeviceInformation", "Queries": "UDID"}, "Queries: expected <array>, got string"),
        ({"RequestType": "InstallApplication", "Options": [1]}, "Options: expected <dictionary>, got array"),
    ],
)
def test_wrong_types(command: dict[str, object], expected: str) -> None:
    assert expected in messages(schema.validate_command(command))


def test_real_and_date_types() -> None:
    keys = [
        {"key": "R", "type": "<real>", "presence": "optional"},
        {"key": "D", "type": "<date>", "presence": "optional"},
    ]
    assert schema.validate_keys(keys, {"R": 1.5, "D": datetime.now(UTC)}) == []
    assert schema.validate_keys(keys, {"R": 2}) == []  # an integer is a valid real
    assert messages(schema.validate_keys(keys, {"R": True, "D": "2024-01-01"})) == [
        "R: expected <real>, got boolean",
        "D: expected <date>, got string",
    ]
    assert messages(schema.validate_keys(keys, {"R": float("nan")})) == ["R: a plist real must be finite"]


def test_missing_required_keys_top_level_and_nested() -> None:
    assert messages(schema.validate_command({"RequestType": "ClearPasscode"})) == [
        "UnlockToken: missing required key"
    ]
    problems = schema.validate_command({"RequestType": "Settings", "Settings": [{"Item": "VoiceRoaming"}]})
    assert "Settings[0].Enabled: missing required key" in messages(problems)


def test_values_outside_rangelist() -> None:
    problems = schema.validate_command(
        {"RequestType": "InstallApplication", "iTunesStoreID": 1, "ManagementFlags": 2}
    )
    assert messages(problems) == ["ManagementFlags: 2 is not one of [1, 4, 5]"]
    problems = schema.validate_command({"RequestType": "EraseDevice", "ObliterationBehavior": "Sometimes"})
    assert messages(problems) == [
        "ObliterationBehavior: 'Sometimes' is not one of "
        "['Default', 'DoNotObliterate', 'ObliterateWithWarning', 'Always']"
    ]
    # Type-strict: True is not 1 and "1" is not 1.
    for ok, value in ((True, 1), (False, True), (False, "1")):
        command = {"RequestType": "InstallApplication", "Options": {"PurchaseMethod": value}}
        problems = schema.validate_command(command)
        assert (problems == []) is ok, value


def test_range_format_and_repetition_in_profiles() -> None:
    policy = "com.apple.mobiledevice.passwordpolicy"
    assert messages(schema.validate_payload(_payload(policy, maxFailedAttempts=12))) == [
        "maxFailedAttempts: 12 is above the maximum 11"
    ]
    assert messages(schema.validate_payload(_payload(policy, minLength=-1))) == [
        "minLength: -1 is below the minimum 0"
    ]
    bad_uuid = _payload("com.apple.eas.account", PayloadCertificateUUID="not-a-uuid")
    assert messages(schema.validate_payload(bad_uuid))[0].startswith(
        "PayloadCertificateUUID: 'not-a-uuid' does not match the format"
    )
    triple = _payload(
        "com.apple.security.scep", PayloadContent={"URL": "https://x", "Subject": [[["CN", "a", "b"]]]}
    )
    assert messages(schema.validate_payload(triple)) == [
        "PayloadContent.Subject[0][0]: must hold between 2 and 2 items, got 3"
    ]


def test_array_item_alternatives_report_the_closest_kind() -> None:
    problems = messages(
        schema.validate_command(
            {"RequestType": "Settings", "Settings": [{"Item": "DataRoaming", "Enabled": "yes"}]}
        )
    )
    assert problems[0].startswith("Settings[0]: matches none of the")
    assert "(closest: DataRoaming)" in problems[0]
    assert "Settings[0].Enabled: expected <boolean>, got string" in problems


def test_string_with_subkeys_is_an_enumeration() -> None:
    ok = {"RequestType": "DeviceInformation", "Queries": ["UDID", "OSVersion"]}
    assert schema.validate_command(ok, os_name="iOS") == []
    problems = schema.validate_command({"RequestType": "DeviceInformation", "Queries": ["UDlD"]})
    assert messages(problems) == ["Queries[0]: 'UDlD' is not a known value (did you mean 'UDID'?)"]


def test_wildcard_keys_accept_any_name() -> None:
    command = {
        "RequestType": "InstallApplication",
        "iTunesStoreID": 1,
        "Configuration": {"anything": "goes", "nested": {"a": [1, 2.5, b"x"]}},
    }
    assert schema.validate_command(command) == []
    # ... but still only plist values.
    problems = schema.validate_command({**command, "Configuration": {"x": None}})
    assert messages(problems) == ["Configuration.x: NoneType cannot be stored in a plist"]


def test_os_support() -> None:
    # PIN is macOS only (Find My); EthernetMAC is not an iOS query.
    lock = {"RequestType": "DeviceLock", "PIN": "123456"}
    assert messages(schema.validate_command(lock, os_name="iOS")) == ["PIN: not supported on iOS"]
    assert schema.validate_command({"RequestType": "DeviceLock", "PIN": "123456"}, os_name="macOS") == []
    assert messages(schema.validate_command({"RequestType": "DeviceLocation"}, os_name="macOS")) == [
        "RequestType: DeviceLocation is not supported on macOS"
    ]
    assert messages(
        schema.validate_command(
            {"RequestType": "DeviceInformation", "Queries": ["EthernetMAC"]}, os_name="iOS"
        )
    ) == ["Queries[0]: 'EthernetMAC' is not supported on iOS"]
    # Without an OS, only structure is checked.
    assert schema.validate_command({"RequestType": "DeviceLock", "PIN": "123456"}) == []


def test_deep_nesting_is_bounded() -> None:
    value: object = "x"
    for _ in range(200):
        value = {"k": value}
    problems = schema.validate_command({"RequestType": "InstallApplication", "Configuration": value})
    assert any("nested too deeply" in p for p in messages(problems))


def test_check_command_raises_with_every_problem() -> None:
    with pytest.raises(schema.SchemaError) as err:
        schema.check_command({"RequestType": "DeviceLock", "Message": 1, "Bogus": 2})
    assert len(err.value.problems) == 2
    assert "Message: expected <string>" in str(err.value) and "Bogus: unknown key" in str(err.value)


# ---- profiles ------------------------------------------------------------------------------------
def _payload(payload_type: str, **keys: object) -> dict[str, object]:
    return {
        "PayloadType": payload_type,
        "PayloadVersion": 1,
        "PayloadIdentifier": "com.example.p",
        "PayloadUUID": "7D1F0E9A-2B2C-4C1E-9A53-4D0E2F6B8C11",
        **keys,
    }


def _profile(*payloads: dict[str, object], **keys: object) -> dict[str, object]:
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": "com.example",
        "PayloadUUID": "1D1F0E9A-2B2C-4C1E-9A53-4D0E2F6B8C11",
        "PayloadContent": list(payloads),
        **keys,
    }


def test_profile_top_level_and_payloads() -> None:
    good = _profile(_payload("com.apple.security.root", PayloadContent=b"\x30\x82"))
    assert schema.validate_profile(good, os_name="iOS") == []
    problems = messages(
        schema.validate_profile(
            _profile(
                _payload("com.apple.security.root"),
                PayloadScope="Everyone",
                PayloadVersion=2,
            )
        )
    )
    assert problems == [
        "PayloadVersion: 2 is not one of [1]",
        "PayloadScope: 'Everyone' is not one of ['System', 'User']",
        "PayloadContent[0].PayloadContent: missing required key",
    ]
    missing = dict(good)
    del missing["PayloadUUID"]
    assert messages(schema.validate_profile(missing)) == ["PayloadUUID: missing required key"]


def test_payload_common_keys_and_unknown_payload_types() -> None:
    no_common = {"PayloadType": "com.apple.security.root", "PayloadContent": b"x"}
    assert set(messages(schema.validate_payload(no_common))) == {
        "PayloadVersion: missing required key",
        "PayloadIdentifier: missing required key",
        "PayloadUUID: missing required key",
    }
    foreign = _profile(_payload("com.example.custom", Anything=True))
    assert messages(schema.validate_profile(foreign)) == [
        "PayloadContent[0].PayloadType: no schema for PayloadType 'com.example.custom'"
    ]
    assert schema.validate_profile(foreign, unknown_payloads=True) == []
    broken = _profile({"PayloadType": "com.example.custom"})
    assert len(schema.validate_profile(broken, unknown_payloads=True)) == 3


def test_values_a_plist_cannot_carry() -> None:
    big = {"RequestType": "InstallApplication", "iTunesStoreID": 2**64}
    assert [str(p) for p in schema.validate_command(big)] == [
        "iTunesStoreID: outside the 64-bit range of a plist integer"
    ]
    assert schema.validate_command({**big, "iTunesStoreID": 2**64 - 1}) == []
    control = {"RequestType": "DeviceLock", "Message": "line\x00break"}
    assert [str(p) for p in schema.validate_command(control)] == [
        "Message: control characters cannot be sent in a plist string (use <data>)"
    ]
    surrogate = {"RequestType": "InstallApplication", "Configuration": {"\ud800": 1, "n": -(2**63) - 1}}
    assert sorted(str(p) for p in schema.validate_command(surrogate)) == [
        "Configuration.n: outside the 64-bit range of a plist integer",
        "Configuration.\ud800: key: not valid Unicode (lone surrogate)",
    ]
