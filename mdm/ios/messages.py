"""Apple MDM protocol messages: plists from devices parsed into typed check-in messages and command
reports, and the JSON-safe form in which plist values are stored.

Key names and types follow Apple's schema (apple/device-management ``mdm/checkin/*.yaml``); the
conformance tests compare the tables below with the vendored YAML. Keys a message does not
declare are kept in ``extra`` and otherwise ignored, as devices add keys with every OS release.
"""

from __future__ import annotations

import base64
import binascii
import math
import plistlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.parsers.expat import ExpatError

from mdm.core import plist_parse
from mdm.core.errors import InvalidArgument

DATA_MARKER = "__data__"
DATE_MARKER = "__date__"


class MessageError(InvalidArgument):
    """The body is not an acceptable MDM message (400)."""

    code = "invalid_message"


# ---- plist loading -----------------------------------------------------------------------------


def _sniff(body: bytes) -> None:
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not (head.startswith((b"<?xml", b"<plist", b"<!DOCTYPE")) or head.startswith(b"bplist00")):
        raise MessageError("body is not a property list")


def check_tree(value: Any, max_depth: int, max_nodes: int) -> None:
    """Iteratively bound depth and size and reject values PostgreSQL/JSON cannot store
    (NUL characters, lone surrogates, non-string dict keys)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise MessageError(f"property list has more than {max_nodes} values")
        if depth > max_depth:
            raise MessageError(f"property list is nested deeper than {max_depth} levels")
        if isinstance(item, str):
            _check_str(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise MessageError("property list dictionary key is not a string")
                _check_str(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _check_str(text: str) -> None:
    if "\x00" in text:
        raise MessageError("property list string contains a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError("property list string is not valid Unicode") from None


_DATA = re.compile(rb"<data>([^<]*)</data>")


def _repad(match: re.Match[bytes]) -> bytes:
    text = re.sub(rb"[^A-Za-z0-9+/]", b"", match.group(1))
    if len(text) % 4 == 1:
        text = text[:-1]
    return b"<data>" + text + b"=" * (-len(text) % 4) + b"</data>"


def _repad_data(body: bytes) -> bytes:
    """Some captured (anonymised) plists carry <data> with wrong base64 padding; Apple's own parser
    is lenient about it, plistlib is not."""
    return _DATA.sub(_repad, body)


def load_plist(body: bytes, *, max_depth: int = 32, max_nodes: int = 200_000) -> dict[str, Any]:
    """Parse a device's plist (XML or binary) into a dict, or raise MessageError."""
    if not body:
        raise MessageError("empty body; a property list is required")
    _sniff(body)
    try:
        try:
            value = plist_parse.loads(body)
        except binascii.Error:
            value = plist_parse.loads(_repad_data(body))
    except RecursionError:
        raise MessageError(f"property list is nested deeper than {max_depth} levels") from None
    except (
        plistlib.InvalidFileException,
        ExpatError,
        ValueError,
        TypeError,
        LookupError,  # KeyError, IndexError, and an unknown encoding= in the XML declaration
        OverflowError,
        UnicodeError,
        AttributeError,
        EOFError,
        MemoryError,
    ) as exc:
        raise MessageError(f"malformed property list: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise MessageError("property list top level must be a dictionary")
    check_tree(value, max_depth, max_nodes)
    return value


# ---- JSON-safe values --------------------------------------------------------------------------


def to_json_safe(value: Any) -> Any:
    """Plist value -> JSON value: data as {"__data__": base64}, dates as {"__date__": iso} (the
    markers ``mdm.ios.command_codec.to_plist_dict`` turns back into plist values)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        return {DATA_MARKER: base64.b64encode(value).decode()}
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {DATE_MARKER: when.isoformat()}
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if isinstance(value, plistlib.UID):
        return value.data
    return str(value)


# ---- typed messages ----------------------------------------------------------------------------

# Schema types of the keys each message reads: (python type, required). "identifier" rules
# (UDID, or EnrollmentID for User Enrollment) are checked separately.
STRING, DATA, BOOL = "<string>", "<data>", "<boolean>"
_PY: dict[str, type] = {STRING: str, DATA: bytes, BOOL: bool}

CHECKIN_KEYS: dict[str, dict[str, tuple[str, bool]]] = {
    "Authenticate": {
        "MessageType": (STRING, True),
        "Topic": (STRING, True),
        "UDID": (STRING, False),
        "EnrollmentID": (STRING, False),
        "OSVersion": (STRING, False),
        "BuildVersion": (STRING, False),
        "ProductName": (STRING, False),
        "SerialNumber": (STRING, False),
        "IMEI": (STRING, False),
        "MEID": (STRING, False),
        "DeviceName": (STRING, False),
        "Model": (STRING, False),
        "ModelName": (STRING, False),
    },
    "TokenUpdate": {
        "MessageType": (STRING, True),
        "Topic": (STRING, True),
        "UDID": (STRING, False),
        "EnrollmentID": (STRING, False),
        "EnrollmentUserID": (STRING, False),
        "Token": (DATA, True),
        "PushMagic": (STRING, True),
        "UnlockToken": (DATA, False),
        "AwaitingConfiguration": (BOOL, False),
        "UserID": (STRING, False),
        "UserShortName": (STRING, False),
        "UserLongName": (STRING, False),
        "NotOnConsole": (BOOL, False),
    },
    "CheckOut": {
        "MessageType": (STRING, True),
        "Topic": (STRING, True),
        "UDID": (STRING, False),
        "EnrollmentID": (STRING, False),
    },
    "UserAuthenticate": {
        "MessageType": (STRING, True),
        "UDID": (STRING, False),
        "EnrollmentID": (STRING, False),
        "UserID": (STRING, True),
        "DigestResponse": (STRING, False),
        "UserShortName": (STRING, False),
        "UserLongName": (STRING, False),
    },
    "SetBootstrapToken": {
        "MessageType": (STRING, True),
        "UDID": (STRING, False),
        "EnrollmentID": (STRING, False),
        "BootstrapToken": (DATA, False),
        "AwaitingConfiguration": (BOOL, False),
    },
    "GetBootstrapToken": {
        "MessageType": (STRING, True),
        "UDID": (STRING, False),
        "EnrollmentID": (STRING, False),
        "AwaitingConfiguration": (BOOL, False),
    },
    "DeclarativeManagement": {
        "MessageType": (STRING, True),
        "UDID": (STRING, False),
        "EnrollmentID": (STRING, False),
        "Endpoint": (STRING, True),
        "Data": (DATA, False),
        "UserID": (STRING, False),
    },
}

REPORT_KEYS: dict[str, tuple[str, bool]] = {
    "UDID": (STRING, False),
    "EnrollmentID": (STRING, False),
    "Status": (STRING, True),
    "CommandUUID": (STRING, False),
    "RequestType": (STRING, False),
    "UserID": (STRING, False),
    "EnrollmentUserID": (STRING, False),
}
REPORT_STATUSES = frozenset({"Idle", "Acknowledged", "Error", "CommandFormatError", "NotNow"})
# Envelope keys removed from a report before its result is stored.
ENVELOPE_KEYS = frozenset(
    {
        "UDID",
        "EnrollmentID",
        "EnrollmentUserID",
        "Status",
        "CommandUUID",
        "UserID",
        "UserShortName",
        "UserLongName",
    }
)
MAX_ID_LENGTH = 255


def _typed(plist: dict[str, Any], spec: dict[str, tuple[str, bool]], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (kind, required) in spec.items():
        value = plist.get(key)
        if value is None:
            if required:
                raise MessageError(f"{what}: required key {key} is missing")
            continue
        if not isinstance(value, _PY[kind]) or (kind != BOOL and isinstance(value, bool)):
            raise MessageError(f"{what}: {key} must be {kind}")
        if isinstance(value, str) and key != "DigestResponse" and len(value) > MAX_ID_LENGTH:
            raise MessageError(f"{what}: {key} is longer than {MAX_ID_LENGTH} characters")
        out[key] = value
    return out


def _identifier(values: dict[str, Any], what: str) -> str:
    ident = values.get("UDID") or values.get("EnrollmentID")
    if not ident or not ident.strip():
        raise MessageError(f"{what}: UDID (or EnrollmentID for User Enrollment) is required")
    return str(ident)


@dataclass(frozen=True, slots=True)
class CheckinMessage:
    """One check-in message; ``values`` holds the declared keys with checked types."""

    message_type: str
    identifier: str
    values: dict[str, Any]
    extra: dict[str, Any] = field(repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def user_id(self) -> str | None:
        value = self.values.get("UserID") or self.values.get("EnrollmentUserID")
        return str(value) if value else None


def parse_checkin(plist: dict[str, Any]) -> CheckinMessage:
    """A check-in plist -> CheckinMessage; MessageError for unknown types or bad keys."""
    message_type = plist.get("MessageType")
    if not isinstance(message_type, str):
        raise MessageError("check-in message without a MessageType string")
    spec = CHECKIN_KEYS.get(message_type)
    if spec is None:
        raise MessageError(
            f"unknown check-in MessageType {message_type[:64]!r}", allowed=sorted(CHECKIN_KEYS)
        )
    values = _typed(plist, spec, message_type)
    identifier = _identifier(values, message_type)
    extra = {k: v for k, v in plist.items() if k not in spec}
    return CheckinMessage(message_type, identifier, values, extra)


@dataclass(frozen=True, slots=True)
class CommandReport:
    """A device's request on the command channel: a result for ``command_uuid`` or Idle."""

    identifier: str
    status: str
    command_uuid: str | None
    request_type: str | None
    user_id: str | None
    # The report minus its envelope (UDID, Status, CommandUUID, ...), as sent.
    result: dict[str, Any] = field(repr=False)

    @property
    def is_idle(self) -> bool:
        return self.status == "Idle"

    @property
    def error_chain(self) -> list[dict[str, Any]]:
        chain = self.result.get("ErrorChain")
        return [e for e in chain if isinstance(e, dict)] if isinstance(chain, list) else []


def parse_report(plist: dict[str, Any]) -> CommandReport:
    values = _typed(plist, REPORT_KEYS, "command report")
    identifier = _identifier(values, "command report")
    status = values["Status"]
    if status not in REPORT_STATUSES:
        raise MessageError(f"unknown command report Status {status[:64]!r}", allowed=sorted(REPORT_STATUSES))
    uuid = values.get("CommandUUID")
    if status != "Idle" and not uuid:
        raise MessageError(f"a {status} report needs a CommandUUID")
    result = {k: v for k, v in plist.items() if k not in ENVELOPE_KEYS}
    user = values.get("UserID") or values.get("EnrollmentUserID")
    return CommandReport(
        identifier, status, uuid.upper() if uuid else None, values.get("RequestType"), user, result
    )


def describe_errors(report: CommandReport) -> str:
    """A one-line summary of a report's ErrorChain for the command log."""
    parts = []
    for err in report.error_chain[:5]:
        code = err.get("ErrorCode")
        domain = err.get("ErrorDomain")
        text = err.get("USEnglishDescription") or err.get("LocalizedDescription") or ""
        parts.append(f"{domain or '?'} {code if code is not None else '?'}: {str(text)[:200]}".strip())
    return "; ".join(parts) or report.status


def dump_plist(value: dict[str, Any]) -> bytes:
    return plistlib.dumps(value, fmt=plistlib.FMT_XML, sort_keys=False)
