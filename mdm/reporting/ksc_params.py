"""The Open API's typed "params" container (KSC Open API, "params" and the ``param*`` types),
and the ``PublishEvent`` body this service writes into it.

Inside a container typing is strict and nothing may be null (an absent value is left out):
``paramString`` a JSON string, ``paramBool`` a JSON boolean, ``paramInt`` a JSON number (signed
32-bit), ``paramLong`` ``{"type": "long", "value": n}``, ``paramDouble``
``{"type": "double", "value": x}``, ``paramDateTime`` ``{"type": "datetime", "value":
"YYYY-MM-DDTHH:MM:SSZ"}``, ``paramArray`` a JSON array, a nested container ``{"type": "params",
"value": {...}}``. A method's own ``params`` argument (``pEventBody``) is a plain JSON object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mdm.reporting.seams import OutboundEvent

INT32 = range(-(2**31), 2**31)
INT64 = range(-(2**63), 2**63)
EVENT_TYPE_PREFIX = "KLMDM_EV_"
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_TYPED = {"long", "datetime", "date", "params", "double", "float", "binary"}


def ksc_datetime(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC (the Open API's datetime)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def param_datetime(moment: datetime) -> dict[str, str]:
    return {"type": "datetime", "value": ksc_datetime(moment)}


def param_long(value: int) -> dict[str, Any]:
    return {"type": "long", "value": value}


def to_param(value: Any) -> Any:
    """A Python value as a typed param; None stays None (the caller leaves it out)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if value in INT32:
            return value
        if value in INT64:
            return param_long(value)
        return str(value)
    if isinstance(value, float):
        return {"type": "double", "value": value}
    if isinstance(value, datetime):
        return param_datetime(value)
    if isinstance(value, Mapping):
        return {"type": "params", "value": params(value)}
    if isinstance(value, list | tuple):
        return [p for p in (to_param(v) for v in value) if p is not None]
    return str(value)


def params(values: Mapping[str, Any]) -> dict[str, Any]:
    """A container: every non-null value typed."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        typed = to_param(value)
        if typed is not None:
            out[str(key)] = typed
    return out


def event_type(event: OutboundEvent) -> str:
    return EVENT_TYPE_PREFIX + event.type.upper()


def event_body(event: OutboundEvent) -> dict[str, Any]:
    """``pEventBody``: the event id (the core's de-duplication key), the event's own fields, and
    the device and command records as ``KLMDM_DEVICE_*`` / ``KLMDM_CMD_*`` attributes."""
    body: dict[str, Any] = {
        "KLMDM_EVENT_ID": event.uuid,
        "KLMDM_EVENT_TYPE": event.type,
        "KLMDM_EVENT_SEVERITY": event.severity,
        "KLMDM_EVENT_TIME": param_datetime(event.created_at),
        "KLMDM_EVENT_BODY": to_param(dict(event.body)),
    }
    if event.user_id is not None:
        body["KLMDM_USER_ID"] = param_long(event.user_id)
    device = event.device
    if event.device_id is not None:
        body["KLMDM_DEVICE_ID"] = param_long(event.device_id)
    if device is not None:
        body["KLMDM_DEVICE_ID"] = param_long(device.id)
        body.update(params({
            "KLMDM_DEVICE_PROTOCOL": device.protocol,
            "KLMDM_DEVICE_STATUS": device.status,
            "KLMDM_DEVICE_NAME": device.name,
            "KLMDM_DEVICE_MODEL": device.model,
            "KLMDM_DEVICE_OS_VERSION": device.os_version,
            "KLMDM_DEVICE_SERIAL": device.serial_number,
            "KLMDM_DEVICE_UDID": device.udid,
            "KLMDM_DEVICE_USER": device.user,
            "KLMDM_DEVICE_LAST_SEEN": device.last_seen_at,
        }))
    command = event.body.get("command")
    if isinstance(command, str) and isinstance(event.body.get("command_type"), str):
        body.update(params({
            "KLMDM_CMD_GUID": command,
            "KLMDM_CMD_TYPE": event.body["command_type"],
            "KLMDM_CMD_STATUS": event.body.get("status"),
        }))
    return body


def check_container(values: Any, where: str = "pEventBody") -> str:
    """The first violation of the container rules in ``values`` (a plain object), or ""."""
    if not isinstance(values, dict):
        return f"{where} is not a params container"
    for key, value in values.items():
        problem = check_param(value, f"{where}.{key}")
        if problem:
            return problem
    return ""


def check_param(value: Any, where: str) -> str:
    if value is None:
        return f"{where}: null is not allowed inside a params container"
    if isinstance(value, bool | str):
        return ""
    if isinstance(value, int):
        return "" if value in INT32 else f"{where}: {value} does not fit paramInt (use a long)"
    if isinstance(value, float):
        return f"{where}: a bare number with a fraction is not a param type (use a double)"
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = check_param(item, f"{where}[{index}]")
            if problem:
                return problem
        return ""
    if not isinstance(value, dict) or set(value) != {"type", "value"} or value["type"] not in _TYPED:
        return f"{where}: an object must be {{\"type\": one of {sorted(_TYPED)}, \"value\": ...}}"
    kind, inner = value["type"], value["value"]
    if kind == "long":
        ok = isinstance(inner, int) and not isinstance(inner, bool) and inner in INT64
    elif kind == "datetime":
        ok = isinstance(inner, str) and bool(_DATETIME.match(inner))
    elif kind == "date":
        ok = isinstance(inner, str) and bool(_DATE.match(inner))
    elif kind in ("double", "float"):
        ok = isinstance(inner, int | float) and not isinstance(inner, bool)
    elif kind == "binary":
        ok = isinstance(inner, str)
    else:
        return check_container(inner, where)
    return "" if ok else f"{where}: bad {kind} value {str(inner)[:40]!r}"
