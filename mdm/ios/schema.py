"""Validate MDM command and configuration-profile dicts against Apple's device-management schema.

The schema is Apple's (github.com/apple/device-management, MIT licence), vendored under
``schema_data/`` with the layout ``mdm/commands``, ``mdm/profiles`` and its ``LICENSE.txt``.

Hand-written because no library validates this YAML dialect: it is not JSON Schema but a list of
``payloadkeys`` (``key``, ``type`` among ``<string> <integer> <real> <boolean> <date> <data> <array>
<dictionary> <any>``, ``presence``, ``subkeys``, ``rangelist``, ``range``, ``format``,
``repetition``, per-OS ``supportedOS``). Conventions of the dialect handled here:

- a key named ``ANY`` (or ``ANY something``) stands for any key name in its dictionary;
- the single subkey of an ``<array>`` describes every item; several subkeys are alternatives (the
  ``Settings`` command's items) and an item must match one of them;
- ``repetition`` on an array's item bounds the array's length;
- a ``<string>`` with subkeys (``DeviceInformation`` ``Queries``) takes one of the subkeys' names;
- ``supportedOS: {iOS: {introduced: n/a}}`` marks a key that the OS does not know.

Values are plist values as ``plistlib`` produces them: ``bytes`` for ``<data>``, ``datetime``
for ``<date>``; ``bool`` is not an ``<integer>``.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mdm.ios.schema_documents import (
    COMMANDS_DIR,
    PROFILES_DIR,
    SCHEMA_ROOT,
    UnknownSchema,
    command_document,
    load_document,
    payload_types,
    profile_document,
    request_types,
    schema_file,
)

__all__ = [
    "COMMANDS_DIR", "PROFILES_DIR", "SCHEMA_ROOT", "Problem", "SchemaError", "UnknownSchema", "check_command",
    "check_profile", "command_document", "load_document", "payload_types", "profile_document",
    "request_types", "schema_file", "validate_command", "validate_keys", "validate_payload",
    "validate_profile",
]

KeySpec = Mapping[str, Any]

_PLIST_SCALARS = (str, int, float, bool, bytes, bytearray, datetime)
# What a plist (XML as sent to devices, or binary) can carry at all.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
PLIST_INT_MIN, PLIST_INT_MAX = -(2**63), 2**64 - 1


def _encoding_problem(value: Any) -> str | None:
    if isinstance(value, str):
        if _CONTROL_CHARS.search(value):
            return "control characters cannot be sent in a plist string (use <data>)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "not valid Unicode (lone surrogate)"
    elif isinstance(value, int) and not isinstance(value, bool):
        if not PLIST_INT_MIN <= value <= PLIST_INT_MAX:
            return "outside the 64-bit range of a plist integer"
    elif isinstance(value, float) and not math.isfinite(value):
        return "a plist real must be finite"
    return None


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SchemaError(ValueError):
    """A dict that does not conform; ``problems`` lists every finding."""

    def __init__(self, what: str, problems: Sequence[Problem]) -> None:
        self.what = what
        self.problems = list(problems)
        super().__init__(f"{what}: " + "; ".join(str(p) for p in self.problems))


# ---- validation --------------------------------------------------------------------------------
def _is_wildcard(spec: KeySpec) -> bool:
    key = str(spec.get("key", ""))
    return key == "ANY" or key.startswith("ANY ")


def _not_on(spec: KeySpec, os_name: str | None) -> bool:
    if os_name is None:
        return False
    supported = spec.get("supportedOS") or {}
    entry = supported.get(os_name) if isinstance(supported, Mapping) else None
    return isinstance(entry, Mapping) and str(entry.get("introduced", "")) == "n/a"


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):
        return "data"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, Mapping):
        return "dictionary"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _type_ok(expected: str, value: Any) -> bool:
    match expected:
        case "<string>":
            return isinstance(value, str)
        case "<integer>":
            return isinstance(value, int) and not isinstance(value, bool)
        case "<real>":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "<boolean>":
            return isinstance(value, bool)
        case "<date>":
            return isinstance(value, datetime)
        case "<data>":
            return isinstance(value, bytes | bytearray)
        case "<array>":
            return isinstance(value, list | tuple)
        case "<dictionary>":
            return isinstance(value, Mapping)
        case "<any>":
            return True
    return False


def _same(value: Any, allowed: Any) -> bool:
    """Equal and of the same kind: 1 is not True, "1" is not 1, 2 equals 2.0."""
    numeric = (int, float)
    if isinstance(value, bool) or isinstance(allowed, bool):
        return type(value) is type(allowed) and value == allowed
    if isinstance(value, numeric) and isinstance(allowed, numeric):
        return value == allowed
    return type(value) is type(allowed) and value == allowed


# Name -> spec of each payloadkeys list, built once per list (the documents are cached, and a
# restrictions payload has some two hundred keys). The list itself is kept to pin its id.
_COMPILED: dict[int, tuple[Sequence[KeySpec], dict[str, KeySpec], KeySpec | None]] = {}


def _compiled(keys: Sequence[KeySpec]) -> tuple[dict[str, KeySpec], KeySpec | None]:
    hit = _COMPILED.get(id(keys))
    if hit is not None and hit[0] is keys:
        return hit[1], hit[2]
    named = {str(k["key"]): k for k in keys if not _is_wildcard(k)}
    wildcard = next((k for k in keys if _is_wildcard(k)), None)
    if len(_COMPILED) < 20_000:
        _COMPILED[id(keys)] = (keys, named, wildcard)
    return named, wildcard


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class _Validator:
    def __init__(self, os_name: str | None, max_depth: int = 64) -> None:
        self.os_name = os_name
        self.max_depth = max_depth
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def plist_value(self, value: Any, path: str, depth: int) -> None:
        """``<any>``: still has to be something a plist can hold."""
        if depth > self.max_depth:
            self.add(path, "nested too deeply")
        elif isinstance(value, _PLIST_SCALARS):
            problem = _encoding_problem(value)
            if problem:
                self.add(path, problem)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                where = f"{path}.{k}" if path else str(k)
                if not isinstance(k, str):
                    self.add(path, f"dictionary keys must be strings, got {_type_name(k)}")
                elif _encoding_problem(k):
                    self.add(where, f"key: {_encoding_problem(k)}")
                else:
                    self.plist_value(v, where, depth + 1)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                self.plist_value(v, f"{path}[{i}]", depth + 1)
        else:
            self.add(path, f"{_type_name(value)} cannot be stored in a plist")

    def value(self, spec: KeySpec, value: Any, path: str, depth: int) -> None:
        expected = str(spec.get("type", "<any>"))
        if depth > self.max_depth:
            self.add(path, "nested too deeply")
            return
        if not _type_ok(expected, value):
            self.add(path, f"expected {expected}, got {_type_name(value)}")
            return
        subkeys = spec.get("subkeys") or []
        if expected == "<any>":
            self.plist_value(value, path, depth)
        elif expected == "<dictionary>":
            if subkeys:
                self.dictionary(subkeys, value, path, depth + 1)
            else:
                self.plist_value(value, path, depth)
        elif expected == "<array>":
            self.array(spec, subkeys, value, path, depth + 1)
        else:
            self.scalar(spec, subkeys, value, path)

    def scalar(self, spec: KeySpec, subkeys: Sequence[KeySpec], value: Any, path: str) -> None:
        problem = _encoding_problem(value)
        if problem:
            self.add(path, problem)
            return
        rangelist = spec.get("rangelist")
        if rangelist is not None and not any(_same(value, allowed) for allowed in rangelist):
            self.add(path, f"{value!r} is not one of {list(rangelist)!r}")
        bounds = spec.get("range")
        if isinstance(bounds, Mapping) and isinstance(value, int | float):
            low, high = bounds.get("min"), bounds.get("max")
            if low is not None and value < low:
                self.add(path, f"{value!r} is below the minimum {low!r}")
            if high is not None and value > high:
                self.add(path, f"{value!r} is above the maximum {high!r}")
        fmt = spec.get("format")
        if isinstance(fmt, str) and isinstance(value, str) and not _regex(fmt).search(value):
            self.add(path, f"{value!r} does not match the format {fmt!r}")
        if subkeys and isinstance(value, str):
            allowed, _ = _compiled(subkeys)
            if value not in allowed:
                close = difflib.get_close_matches(value, list(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(path, f"{value!r} is not a known value{hint}")
            elif _not_on(allowed[value], self.os_name):
                self.add(path, f"{value!r} is not supported on {self.os_name}")

    def array(self, spec: KeySpec, subkeys: Sequence[KeySpec], items: Sequence[Any], path: str,
              depth: int) -> None:
        if not subkeys:
            self.plist_value(list(items), path, depth)
            return
        if len(subkeys) == 1:
            item_spec = subkeys[0]
            repetition = item_spec.get("repetition")
            if isinstance(repetition, Mapping):
                low, high = repetition.get("min"), repetition.get("max")
                if (low is not None and len(items) < low) or (high is not None and len(items) > high):
                    self.add(path, f"must hold between {low} and {high} items, got {len(items)}")
            for i, item in enumerate(items):
                self.value(item_spec, item, f"{path}[{i}]", depth)
            return
        for i, item in enumerate(items):
            self.alternatives(subkeys, item, f"{path}[{i}]", depth)

    def alternatives(self, options: Sequence[KeySpec], item: Any, path: str, depth: int) -> None:
        best: tuple[str, list[Problem]] | None = None
        for option in options:
            trial = _Validator(self.os_name, self.max_depth)
            trial.value(option, item, path, depth)
            if not trial.problems:
                return
            if best is None or len(trial.problems) < len(best[1]):
                best = (str(option.get("key")), trial.problems)
        assert best is not None
        self.add(path, f"matches none of the {len(options)} allowed item kinds (closest: {best[0]})")
        self.problems.extend(best[1])

    def dictionary(self, keys: Sequence[KeySpec], mapping: Mapping[Any, Any], path: str,
                   depth: int) -> None:
        named, wildcard = _compiled(keys)
        for name, value in mapping.items():
            if not isinstance(name, str):
                self.add(path, f"dictionary keys must be strings, got {_type_name(name)}")
                continue
            where = f"{path}.{name}" if path else name
            spec = named.get(name)
            if spec is None and wildcard is not None and _encoding_problem(name):
                self.add(where, f"key: {_encoding_problem(name)}")
                continue
            spec = spec or wildcard
            if spec is None:
                close = difflib.get_close_matches(name, list(named), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(where, f"unknown key{hint}")
                continue
            if _not_on(spec, self.os_name):
                self.add(where, f"not supported on {self.os_name}")
            self.value(spec, value, where, depth)
        for name, spec in named.items():
            if spec.get("presence") == "required" and name not in mapping:
                self.add(f"{path}.{name}" if path else name, "missing required key")


def validate_keys(
    payloadkeys: Sequence[KeySpec], data: Mapping[str, Any], *, os_name: str | None = None, path: str = ""
) -> list[Problem]:
    """Check ``data`` against a list of payload keys (a document's top level or any subkeys)."""
    checker = _Validator(os_name)
    if not isinstance(data, Mapping):
        return [Problem(path, f"expected <dictionary>, got {_type_name(data)}")]
    checker.dictionary(payloadkeys, data, path, 0)
    return checker.problems


def validate_command(command: Mapping[str, Any], *, os_name: str | None = None) -> list[Problem]:
    """An MDM ``Command`` dict: ``RequestType`` plus the keys of its ``mdm/commands`` document."""
    if not isinstance(command, Mapping):
        return [Problem("", f"expected <dictionary>, got {_type_name(command)}")]
    request_type = command.get("RequestType")
    if not isinstance(request_type, str) or not request_type:
        return [Problem("RequestType", "missing required key (a non-empty string)")]
    try:
        doc = command_document(request_type)
    except UnknownSchema as exc:
        return [Problem("RequestType", str(exc))]
    problems = []
    if _not_on(doc["payload"], os_name):
        problems.append(Problem("RequestType", f"{request_type} is not supported on {os_name}"))
    body = {k: v for k, v in command.items() if k != "RequestType"}
    return problems + validate_keys(doc.get("payloadkeys") or [], body, os_name=os_name)


@functools.lru_cache(maxsize=256)
def _payload_keys(payload_type: str) -> list[KeySpec]:
    """A payload's own keys plus the common ``Payload*`` keys (its own definition wins)."""
    own = list(profile_document(payload_type).get("payloadkeys") or [])
    names = {k.get("key") for k in own}
    common = [k for k in profile_document("CommonPayloadKeys").get("payloadkeys") or []
              if k.get("key") not in names]
    return common + own


@functools.lru_cache(maxsize=1)
def _common_and_any() -> list[KeySpec]:
    """The common payload keys, and anything else (a payload type without a vendored schema)."""
    common = profile_document("CommonPayloadKeys").get("payloadkeys") or []
    return [*common, {"key": "ANY", "type": "<any>"}]


def validate_payload(payload: Mapping[str, Any], *, os_name: str | None = None,
                     path: str = "") -> list[Problem]:
    """One item of a profile's ``PayloadContent``, found by its ``PayloadType``."""
    if not isinstance(payload, Mapping):
        return [Problem(path, f"expected <dictionary>, got {_type_name(payload)}")]
    payload_type = payload.get("PayloadType")
    where = f"{path}.PayloadType" if path else "PayloadType"
    if not isinstance(payload_type, str):
        return [Problem(where, "missing required key (a string)")]
    try:
        doc = profile_document(payload_type)
        keys = _payload_keys(payload_type)
    except UnknownSchema as exc:
        return [Problem(where, str(exc))]
    problems = []
    if _not_on(doc["payload"], os_name):
        problems.append(Problem(where, f"{payload_type} is not supported on {os_name}"))
    return problems + validate_keys(keys, payload, os_name=os_name, path=path)


def validate_profile(profile: Mapping[str, Any], *, os_name: str | None = None,
                     unknown_payloads: bool = False) -> list[Problem]:
    """A whole configuration profile: the top level (``TopLevel.yaml``) and every payload.

    ``unknown_payloads=True`` lets through payload types that have no vendored schema (their
    top-level keys are still checked against the common payload keys).
    """
    problems = validate_keys(profile_document("TopLevel").get("payloadkeys") or [], profile,
                             os_name=os_name)
    content = profile.get("PayloadContent") if isinstance(profile, Mapping) else None
    if isinstance(content, list | tuple):
        for i, item in enumerate(content):
            path = f"PayloadContent[{i}]"
            if (unknown_payloads and isinstance(item, Mapping)
                    and item.get("PayloadType") not in payload_types()):
                problems += validate_keys(_common_and_any(), item, os_name=os_name, path=path)
            else:
                problems += validate_payload(item, os_name=os_name, path=path)
    return problems


def check_command(command: Mapping[str, Any], *, os_name: str | None = None) -> None:
    problems = validate_command(command, os_name=os_name)
    if problems:
        raise SchemaError(f"{command.get('RequestType', 'command')} does not match Apple's schema",
                          problems)


def check_profile(profile: Mapping[str, Any], *, os_name: str | None = None,
                  unknown_payloads: bool = False) -> None:
    problems = validate_profile(profile, os_name=os_name, unknown_payloads=unknown_payloads)
    if problems:
        raise SchemaError("the profile does not match Apple's schema", problems)
