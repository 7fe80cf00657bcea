"""Parsing and validating the agent's JSON messages against the JSON Schemas of the protocol.

Each message has a schema in ``mdm/kes/schemas/<name>.json`` (draft 2020-12), published with the
protocol (``docs/kes-protocol.md``). Validation uses ``jsonschema_rs`` (compiled once per schema;
the Python ``jsonschema`` is several times slower on the sync hot path).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

from mdm.core.errors import ServiceError

PROTOCOL_VERSION = 1


class MalformedMessage(ServiceError):
    status = 400
    code = "malformed_json"


class SchemaViolation(ServiceError):
    status = 422
    code = "schema_violation"


class UnsupportedVersion(ServiceError):
    status = 400
    code = "unsupported_version"


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("mdm.kes").joinpath("schemas", f"{name}.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(name: str) -> Any:
    return jsonschema_rs.validator_for(schema(name))


def parse(name: str, body: bytes) -> dict[str, Any]:
    """The message ``name`` from a request body: JSON, an object, ``"v"`` supported, valid
    against its schema; else a 4xx naming the first problem and where it is."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"the body is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise SchemaViolation("a message is a JSON object", path="")
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version!r} is not supported",
                                 supported=[PROTOCOL_VERSION])
    error = next(iter(_validator(name).iter_errors(message)), None)
    if error is not None:
        path = "/" + "/".join(str(p) for p in error.instance_path)
        raise SchemaViolation(f"{name}: {error.message} at {path}", path=path)
    return message
