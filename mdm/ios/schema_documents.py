"""Apple's device-management schema documents (vendored under ``schema_data/``): finding the
document of a RequestType or PayloadType and loading it (``schema`` validates against them)."""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path
from typing import Any

import yaml

SCHEMA_ROOT = Path(__file__).parent / "schema_data" / "mdm"
COMMANDS_DIR = SCHEMA_ROOT / "commands"
PROFILES_DIR = SCHEMA_ROOT / "profiles"


class UnknownSchema(LookupError):
    """No vendored schema describes this RequestType / PayloadType."""


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=256)
def load_document(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        doc = yaml.load(fh, Loader=_LOADER)  # noqa: S506 - a SafeLoader (C or Python)
    if not isinstance(doc, dict) or "payload" not in doc:
        raise UnknownSchema(f"{path.name} is not a device-management schema document")
    return doc


@functools.lru_cache(maxsize=4)
def _index(directory: Path, field: str) -> dict[str, Path]:
    """``requesttype``/``payloadtype`` -> file, read from the ``payload:`` block without parsing
    every document (a few hundred kilobytes of YAML)."""
    pattern = re.compile(rf"^  {field}:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)
    out: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        match = pattern.search(path.read_text(encoding="utf-8"))
        if match:
            out.setdefault(match.group(1), path)
    return out


def request_types() -> frozenset[str]:
    """Every RequestType the vendored schema describes."""
    return frozenset(_index(COMMANDS_DIR, "requesttype"))


def payload_types() -> frozenset[str]:
    """Every profile PayloadType the vendored schema describes (besides TopLevel)."""
    return frozenset(_index(PROFILES_DIR, "payloadtype")) - {"TopLevel", "CommonPayloadKeys"}


def command_document(request_type: str) -> dict[str, Any]:
    path = _index(COMMANDS_DIR, "requesttype").get(request_type)
    if path is None:
        close = difflib.get_close_matches(request_type, sorted(request_types()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownSchema(f"unknown RequestType {request_type!r}{hint}")
    return load_document(path)


def profile_document(payload_type: str) -> dict[str, Any]:
    path = _index(PROFILES_DIR, "payloadtype").get(payload_type)
    if path is None:
        raise UnknownSchema(f"no schema for PayloadType {payload_type!r}")
    return load_document(path)


def schema_file(*, request_type: str | None = None, payload_type: str | None = None) -> Path:
    """The vendored YAML file that describes a RequestType or a PayloadType."""
    if request_type is not None:
        command_document(request_type)
        return _index(COMMANDS_DIR, "requesttype")[request_type]
    if payload_type is None:
        raise TypeError("give request_type or payload_type")
    profile_document(payload_type)
    return _index(PROFILES_DIR, "payloadtype")[payload_type]
