"""The actions of a simulated device: lock, passcode, erase, settings, lost mode, restart."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mdm.sim.checks import CommandFailed, FormatError, arg, require_rights, require_supervised
from mdm.sim.state import R_ERASE, R_LOCK, R_SETTINGS, DeviceState, Handler


def _device_lock(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    message = arg(cmd, "Message", "string")
    phone = arg(cmd, "PhoneNumber", "string")
    arg(cmd, "PIN", "string")
    require_rights(state, R_LOCK, "DeviceLock")
    if message or phone:
        return {"MessageResult": "Success" if state.passcode_present else "NoPasscodeSet"}
    return {}


def _clear_passcode(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    token = arg(cmd, "UnlockToken", "data", required=True)
    require_rights(state, R_LOCK, "ClearPasscode")
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
        arg(cmd, key, kind)
    require_rights(state, R_ERASE, "EraseDevice")
    state.wiped = True  # takes effect after the acknowledgement is sent
    return {}


def _settings(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    items = arg(cmd, "Settings", "array", required=True)
    if not all(isinstance(i, dict) and isinstance(i.get("Item"), str) for i in items):
        raise FormatError("Settings: every entry needs an Item string")
    require_rights(state, R_SETTINGS, "Settings")
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
    texts = [arg(cmd, k, "string") for k in ("Message", "PhoneNumber", "Footnote")]
    if not any(texts[:2]):
        raise FormatError("EnableLostMode needs Message or PhoneNumber")
    require_supervised(state, "EnableLostMode")
    state.lost_mode = True
    return {}


def _disable_lost_mode(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    require_supervised(state, "DisableLostMode")
    if not state.lost_mode:
        raise CommandFailed(("MCMDMErrorDomain", 12067, "The device is not in MDM Lost Mode."))
    state.lost_mode = False
    return {}


def _supervised_ack(request: str) -> Callable[[DeviceState, dict[str, Any]], dict[str, Any]]:
    def handler(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
        require_supervised(state, request)
        return {}

    return handler


def _plain_ack(state: DeviceState, cmd: dict[str, Any]) -> dict[str, Any]:
    return {}


HANDLERS: dict[str, Handler] = {
    "DeviceLock": _device_lock,
    "ClearPasscode": _clear_passcode,
    "EraseDevice": _erase_device,
    "Settings": _settings,
    "DeviceLocation": _device_location,
    "PlayLostModeSound": _play_sound,
    "EnableLostMode": _enable_lost_mode,
    "DisableLostMode": _disable_lost_mode,
    "RestartDevice": _supervised_ack("RestartDevice"),
    "ShutDownDevice": _supervised_ack("ShutDownDevice"),
    "ScheduleOSUpdateScan": _plain_ack,
    "DeclarativeManagement": _plain_ack,
}
