"""How a simulated iOS device answers each MDM command.

``answer(state, message)`` takes the command plist the server sent (``CommandUUID`` + ``Command``)
and returns the result plist the device sends back, updating the device state (installed profiles
and apps, lost mode, passcode, wiped...) the way iOS does. Error codes follow Apple's published
catalogue (MCMDMErrorDomain, MCProfileErrorDomain, MCInstallationErrorDomain, ...).

The device state lives in ``mdm.sim.state``, the argument and rights checks in ``mdm.sim.checks``,
and the handlers per family in ``mdm.sim.queries`` (inventory), ``mdm.sim.installs`` (profiles,
provisioning profiles, apps) and ``mdm.sim.actions`` (lock, erase, settings, lost mode). This
module dispatches one message to its handler and keeps the names callers import from here.
"""

from __future__ import annotations

from typing import Any

from mdm.sim import actions, installs, queries
from mdm.sim.checks import CommandFailed, FormatError
from mdm.sim.installs import STORE
from mdm.sim.queries import NETWORK_QUERIES, device_information
from mdm.sim.state import (
    ALL_RIGHTS,
    PREINSTALLED,
    R_APP_MGMT,
    R_APPS_INSPECT,
    R_DEVICE_INFO,
    R_ERASE,
    R_LOCK,
    R_NETWORK_INFO,
    R_PROFILE_INSPECT,
    R_PROFILE_INSTALL,
    R_PROV_INSPECT,
    R_PROV_INSTALL,
    R_RESTRICTIONS,
    R_SECURITY,
    R_SETTINGS,
    App,
    DeviceState,
    Handler,
    InstalledProfile,
)

__all__ = [
    "ALL_RIGHTS",
    "HANDLERS",
    "NETWORK_QUERIES",
    "NEVER_DEFERRED",
    "PREINSTALLED",
    "R_APPS_INSPECT",
    "R_APP_MGMT",
    "R_DEVICE_INFO",
    "R_ERASE",
    "R_LOCK",
    "R_NETWORK_INFO",
    "R_PROFILE_INSPECT",
    "R_PROFILE_INSTALL",
    "R_PROV_INSPECT",
    "R_PROV_INSTALL",
    "R_RESTRICTIONS",
    "R_SECURITY",
    "R_SETTINGS",
    "STORE",
    "App",
    "CommandFailed",
    "DeviceState",
    "FormatError",
    "Handler",
    "InstalledProfile",
    "answer",
    "device_information",
]

# Commands a locked/busy device still executes (a locked phone can be locked again or erased).
NEVER_DEFERRED = frozenset({"DeviceLock", "EraseDevice"})

HANDLERS: dict[str, Handler] = {**queries.HANDLERS, **actions.HANDLERS, **installs.HANDLERS}


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
