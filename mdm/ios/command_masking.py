"""What the command log shows of a command's arguments: secrets masked, files and data reduced to
their size and SHA-256 (the stored payload keeps them for the device)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from mdm.ios.command_codec import DATA_MARKER

MASK = "********"
# Argument keys (ours and Apple's) whose values are secrets.
SECRET_KEYS = frozenset({
    "password", "shared_secret", "auth_password", "proxy_password", "challenge", "redemption_code",
    "Password", "UserPassword", "SharedSecret", "AuthPassword", "XAuthPassword", "ProxyPassword",
    "IncomingPassword", "OutgoingPassword", "CertificatePassword", "Challenge", "RedemptionCode",
    "UnlockToken",
})
# Arguments carrying whole files (keys, profiles with passwords inside): shown as size + digest.
BLOB_KEYS = frozenset({"pkcs12", "mobileconfig_base64", "provisioning_profile"})


def _summary(text: str | bytes) -> dict[str, Any]:
    raw = text.encode() if isinstance(text, str) else text
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def mask_secrets(value: Any, key: str | None = None) -> Any:
    """Arguments as stored in the command log and shown by the API: secrets masked, files and
    data reduced to their size and SHA-256 (the payload keeps them for the device)."""
    if key in SECRET_KEYS and value is not None:
        return MASK
    if key in BLOB_KEYS and isinstance(value, str | bytes):
        return _summary(value)
    if isinstance(value, Mapping):
        if len(value) == 1 and DATA_MARKER in value and isinstance(value[DATA_MARKER], str):
            return {DATA_MARKER: _summary(value[DATA_MARKER])}
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def public_args(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments to store with the command and show in its log."""
    masked = mask_secrets(args)
    return masked if isinstance(masked, dict) else {}
