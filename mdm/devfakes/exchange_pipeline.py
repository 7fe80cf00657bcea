"""A fast reader for the CreatePipeline message (psrpcore's generic deserializer spends ~20 ms
on the HostInfo, enums and merge settings of every pipeline; the fake needs only the commands).

``read_create_pipeline(fragment)`` accepts one complete PSRP fragment holding one CreatePipeline
message and returns its commands (name, IsScript, named parameters, end of statement), or None
when the message has anything it does not read exactly (then the caller hands it to psrpcore).
Values read here: String, Boolean, the integer types, $null, TimeSpan, DateTime, and lists of
those; strings are unescaped as psrpcore does (``_xHHHH_``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from psrpcore._payload import unpack_fragment, unpack_message
from psrpcore.types import PSRPMessageType
from psrpcore.types._serializer import (
    _deserialize_datetime,
    _deserialize_duration,
    _deserialize_string,
)

_INTS = frozenset({"I16", "I32", "I64", "U16", "U32", "U64", "By", "SB"})


class _Unsupported(Exception):
    pass


@dataclass
class FastCommand:
    command_text: str
    is_script: bool
    parameters: list[tuple[str | None, Any]] = field(default_factory=list)
    end_of_statement: bool = False


@dataclass
class FastPipeline:
    commands: list[FastCommand]


def _member(obj: ET.Element | None, name: str) -> ET.Element | None:
    if obj is None:
        return None
    ms = obj.find("MS")
    if ms is None:
        return None
    for child in ms:
        if child.get("N") == name:
            return child
    return None


def _items(obj: ET.Element | None) -> list[ET.Element]:
    if obj is None or obj.tag != "Obj":
        raise _Unsupported("not a list")
    lst = obj.find("LST")
    if lst is None:
        lst = obj.find("IE")
    if lst is None:
        raise _Unsupported("not a list")
    return list(lst)


def _value(el: ET.Element | None) -> Any:
    if el is None:
        raise _Unsupported("missing value")
    tag, text = el.tag, el.text or ""
    if tag == "Nil":
        return None
    if tag == "S":
        return _deserialize_string(text)
    if tag == "B":
        return text.strip().lower() == "true"
    if tag in _INTS:
        return int(text)
    if tag == "TS":
        return _deserialize_duration(text)
    if tag == "DT":
        return _deserialize_datetime(text)
    if tag == "Obj" and el.find("MS") is None and el.find("Props") is None:
        return [_value(item) for item in _items(el)]
    raise _Unsupported(tag)


def _commands(cmds: ET.Element | None, *, statement_end: bool) -> list[FastCommand]:
    items = _items(cmds)
    out = []
    for i, obj in enumerate(items):
        name = _member(obj, "Cmd")
        if name is None or name.tag != "S":
            raise _Unsupported("command without a name")
        script = _member(obj, "IsScript")
        command = FastCommand(_deserialize_string(name.text or ""),
                              script is not None and _value(script) is True,
                              end_of_statement=statement_end and i == len(items) - 1)
        for arg in _items(_member(obj, "Args")):
            key = _value(_member(arg, "N"))
            if key is not None and not isinstance(key, str):
                raise _Unsupported("parameter name")
            command.parameters.append((key, _value(_member(arg, "V"))))
        out.append(command)
    return out


def read_create_pipeline(data: bytes) -> FastPipeline | None:
    try:
        fragment = unpack_fragment(bytearray(data))
        if not (fragment.start and fragment.end) or len(fragment.data) + 21 != len(data):
            return None
        message = unpack_message(bytearray(fragment.data))
        if message.message_type != PSRPMessageType.CreatePipeline:
            return None
        xml = bytes(message.data)
        if b"<!" in xml or b"<Ref " in xml:
            return None  # DTDs are refused; object references are psrpcore's to resolve
        root = ET.fromstring(xml)  # noqa: S314  (no DTD: checked above)
        shell = _member(root, "PowerShell")
        extra = _member(shell, "ExtraCmds")
        if extra is not None and extra.tag == "Obj":
            commands = [c for statement in _items(extra)
                        for c in _commands(_member(statement, "Cmds"), statement_end=True)]
        else:
            commands = _commands(_member(shell, "Cmds"), statement_end=False)
    except (_Unsupported, ET.ParseError, ValueError, IndexError, KeyError, TypeError):
        return None
    return FastPipeline(commands) if commands else None
