"""What crosses PSRP, both ways: typed parameter values out, output objects and error records in.

Out: a ``cmdlets.ParamValue`` becomes a value pypsrp serializes with the CLIXML type Exchange binds
it to (str ``<S>``, bool ``<B>``, int ``<I32>``/``<I64>``, list ``<LST>``, timedelta ``<TS>``
as an xs:duration, None ``<Nil/>``). A value is always a value: nothing here builds script text.

In: pypsrp's stock ``Serializer`` hands DateTime and TimeSpan back as their raw XML text, and a
bare ``<LST>`` inside an object of an unknown type as a string of XML. ``RecordSerializer`` keeps
the CLIXML type instead (aware UTC ``datetime``, ``timedelta``, ``list``), so ``to_record`` never
has to guess whether a string "2024-05-01T10:00:00Z" was a date or a display name.
``to_record`` then flattens one output object (a ``GenericComplexObject``) into a ``PSRecord``.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pypsrp.complex_objects import GenericComplexObject
from pypsrp.serializer import Serializer, TaggedValue

from mdm.eas.cmdlets import ParamValue
from mdm.eas.records import PSRecord
from mdm.eas.runner_clixml import parse_datetime, parse_duration, read_output

_I32 = (-(2**31), 2**31 - 1)
_LIST_TAGS = frozenset({"LST", "IE", "QUE", "STK"})

# System.Management.Automation.ErrorCategory, by value.
ERROR_CATEGORIES = (
    "NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected", "InvalidArgument",
    "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType", "MetadataError",
    "NotImplemented", "NotInstalled", "ObjectNotFound", "OperationStopped", "OperationTimeout",
    "SyntaxError", "ParserError", "PermissionDenied", "ResourceBusy", "ResourceExists",
    "ResourceUnavailable", "ReadError", "WriteError", "FromStdErr", "SecurityError",
    "ProtocolError", "ConnectionError", "AuthenticationError", "LimitsExceeded", "QuotaExceeded",
    "NotEnabled",
)


# ---- values out -----------------------------------------------------------------------------


def format_duration(value: timedelta) -> str:
    """A timedelta as the xs:duration .NET reads into a TimeSpan ("PT15M", "P1DT0.5S")."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    days = value.days
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if value.microseconds:
        clock += f"{seconds}.{value.microseconds:06d}".rstrip("0") + "S"
    elif seconds:
        clock += f"{seconds}S"
    if clock:
        text += "T" + clock
    return text if text not in ("P", "-P") else "PT0S"


def parameter_value(value: ParamValue) -> Any:
    """The object to hand to ``PowerShell.add_parameter`` for a typed parameter value."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _I32[0] <= value <= _I32[1] else TaggedValue("I64", value)
    if isinstance(value, timedelta):
        return TaggedValue("TS", format_duration(value))
    if isinstance(value, list):
        return [str(item) for item in value]
    raise TypeError(f"not a cmdlet parameter value: {type(value).__name__}")


# ---- values in ------------------------------------------------------------------------------


class RecordSerializer(Serializer):
    """pypsrp's serializer, keeping the CLIXML types of DateTime, TimeSpan and bare lists."""

    def deserialize(self, element: ET.Element | str, metadata: Any = None,
                    clear: bool = True) -> Any:
        if isinstance(element, str) and metadata is None and clear:
            # A PIPELINE_OUTPUT message (the only one pypsrp deserializes without metadata):
            # the fast reader; anything it cannot read goes the stock way.
            try:
                return read_output(element)
            except (ET.ParseError, ValueError):
                pass
        if isinstance(element, ET.Element):
            if element.tag == "DT" and element.text:
                return parse_datetime(element.text)
            if element.tag == "TS" and element.text:
                return parse_duration(element.text)
            if element.tag in _LIST_TAGS and metadata is None:
                return [self.deserialize(child, clear=False) for child in element]
        return super().deserialize(element, metadata, clear)


def _plain(value: Any, depth: int = 0) -> Any:
    """A deserialized value as a PSRecord value (str, int, bool, datetime, timedelta, list, None)."""
    if value is None or isinstance(value, bool | int | str | timedelta):
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, float):
        return int(value) if value.is_integer() else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if depth > 8:  # a pathological nesting is shown, not walked
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, GenericComplexObject):
        lists = [v for v in value.property_sets if isinstance(v, list)]
        if lists and not value.adapted_properties and not value.extended_properties:
            return _plain(lists[0], depth + 1)
        if value.to_string is not None:
            return str(value.to_string)  # an enum, an ADObjectId, any complex value
        if len(value.property_sets) == 1:
            return _plain(value.property_sets[0], depth + 1)
        return str(value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={_plain(v, depth + 1)}" for k, v in value.items())
    return str(value)


def to_record(obj: Any) -> PSRecord:
    """One output object as a plain record: its adapted properties, then the extended (note)
    properties it does not already have. A primitive output is ``{"Value": ...}``."""
    if not isinstance(obj, GenericComplexObject):
        return {"Value": _plain(obj)}
    record: dict[str, Any] = {str(k): _plain(v) for k, v in obj.adapted_properties.items()}
    for key, value in obj.extended_properties.items():
        record.setdefault(str(key), _plain(value))
    return record


def type_names(obj: Any) -> tuple[str, ...]:
    """The object's type names without the "Deserialized." prefix (for logs and checks)."""
    if not isinstance(obj, GenericComplexObject):
        return ()
    return tuple(t.removeprefix("Deserialized.") for t in obj.types if isinstance(t, str) and t)


# ---- error records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The parts of a PowerShell ErrorRecord that ``faults.fault_error`` needs."""

    message: str
    error_id: str
    category: str
    exception_type: str
    target: str | None
    command: str | None  # the cmdlet that wrote it, when the record says


def _exception_message(exception: Any) -> str:
    if isinstance(exception, GenericComplexObject):
        for props in (exception.adapted_properties, exception.extended_properties):
            message = props.get("Message")
            if message:
                return str(message)
        if exception.to_string:
            return str(exception.to_string)
    return str(exception) if exception is not None else ""


def error_info(record: Any) -> ErrorInfo:
    """An ``ErrorRecord`` (pypsrp's ``ErrorRecordMessage``) as ``ErrorInfo``."""
    exception = getattr(record, "exception", None)
    message = _exception_message(exception) or str(getattr(record, "details_message", "") or "")
    if not message:
        message = str(getattr(record, "message", "") or "") or str(record)
    category_value = getattr(record, "category", None)
    if isinstance(category_value, int) and 0 <= category_value < len(ERROR_CATEGORIES):
        category = ERROR_CATEGORIES[category_value]
    else:
        category = str(category_value or "")
    exception_type = ""
    named = [t for t in getattr(exception, "types", None) or [] if isinstance(t, str) and t]
    if isinstance(exception, GenericComplexObject) and named:
        exception_type = named[0].removeprefix("Deserialized.")
    elif getattr(record, "reason", None):
        exception_type = str(record.reason)
    target = getattr(record, "target_name", None) or None
    target_object = getattr(record, "target_object", None)
    if target is None and target_object is not None:
        target = str(_plain(target_object))
    info = getattr(record, "invocation_info", None)
    command = getattr(record, "command_name", None) or getattr(record, "invocation_name", None)
    if command is None and isinstance(info, GenericComplexObject):
        my_command = info.adapted_properties.get("MyCommand") or info.extended_properties.get(
            "InvocationInfo_MyCommand")
        command = str(_plain(my_command)) if my_command is not None else None
    return ErrorInfo(message=message, error_id=str(getattr(record, "fq_error", "") or ""),
                     category=category, exception_type=exception_type,
                     target=str(target) if target else None,
                     command=str(command) if command else None)
