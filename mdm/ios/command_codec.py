"""How an Apple command is stored (``Command.payload``, a JSON column) and restored for the device.

Bytes are stored as ``{"__data__": base64}`` and dates as ``{"__date__": iso8601}``;
``to_plist_dict`` restores them. ``ClearPasscode`` is stored without its ``UnlockToken`` (a device
secret that lives in ``ios_devices``, not in the command log); the channel inserts it at
delivery (``to_plist_dict(step, unlock_token=...)``).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

DATA_MARKER = "__data__"
DATE_MARKER = "__date__"
MAX_DEPTH = 64


def to_json_safe(value: Any) -> Any:
    """Plist value -> JSON value (bytes and dates become marker dicts)."""
    if isinstance(value, bytes | bytearray):
        return {DATA_MARKER: base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {DATE_MARKER: when.isoformat()}
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    return value


def _decode_marker(value: Mapping[str, Any], path: str) -> Any:
    if DATA_MARKER in value:
        raw = value[DATA_MARKER]
        try:
            if not isinstance(raw, str):
                raise ValueError
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{path}: {DATA_MARKER} must be base64 text") from None
    raw = value[DATE_MARKER]
    try:
        if not isinstance(raw, str):
            raise ValueError
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{path}: {DATE_MARKER} must be an ISO 8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def from_json(value: Any, path: str, depth: int) -> Any:
    """JSON value (with markers) -> plist value; ValueError names the offending ``path``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{path or 'value'}: nested more than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        if len(value) == 1 and (DATA_MARKER in value or DATE_MARKER in value):
            return _decode_marker(value, path)
        return {k: from_json(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if value is None:
        raise ValueError(f"{path or 'value'}: null cannot be sent in a property list")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: a property-list real must be finite")
    return value


def to_plist_dict(payload: Mapping[str, Any], *, unlock_token: bytes | None = None) -> dict[str, Any]:
    """One stored Apple command -> the dict to put under ``Command`` in the plist for the device.

    Restores bytes and dates; for ``ClearPasscode`` inserts ``unlock_token`` (the device's, from
    its TokenUpdate). Raises ValueError on a malformed payload.
    """
    out = from_json(payload, "", 0)
    if not isinstance(out, dict):
        raise ValueError("a command payload is a dictionary")
    if out.get("RequestType") == "ClearPasscode" and "UnlockToken" not in out and unlock_token is not None:
        out["UnlockToken"] = bytes(unlock_token)
    return out
