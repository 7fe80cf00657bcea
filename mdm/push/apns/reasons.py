"""Apple's APNs answers (the "Handling notification responses from APNs" table) mapped to the
transport ``Outcome`` the dispatcher acts on."""

from __future__ import annotations

import json

from mdm.push.types import Outcome, PushResult

# The device token is not (or no longer) valid for this topic: never retried.
INVALID_TOKEN_REASONS = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
)
# Our credentials are refused: the circuit opens until the certificate is replaced.
CREDENTIAL_REASONS = frozenset({
    "BadCertificate",
    "BadCertificateEnvironment",
    "Forbidden",
    "ExpiredProviderToken",
    "InvalidProviderToken",
    "MissingProviderToken",
    "UnrelatedKeyIdInToken",
    "BadEnvironmentKeyIdInToken",
})
# Transient: try again later.
RETRY_REASONS = frozenset({
    "TooManyRequests",
    "TooManyProviderTokenUpdates",
    "InternalServerError",
    "ServiceUnavailable",
    "Shutdown",
    "IdleTimeout",
})


def reason_of(body: bytes) -> str:
    """The ``reason`` of an APNs error body (``{"reason": "..."}``), or "" when there is none."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(data, dict):
        reason = data.get("reason")
        if isinstance(reason, str):
            return reason[:100]
    return ""


def classify(status: int, body: bytes, apns_id: str | None, retry_after: float | None) -> PushResult:
    """One answer to one push as a ``PushResult``."""
    if status == 200:
        return PushResult(Outcome.SENT, "", status, None, apns_id)
    reason = reason_of(body) or f"HTTP {status} (no reason given)"
    if reason in INVALID_TOKEN_REASONS or status == 410:
        return PushResult(Outcome.INVALID_TOKEN, reason, status, None, apns_id)
    if reason in CREDENTIAL_REASONS or status == 403:
        return PushResult(Outcome.CREDENTIALS, reason, status, None, apns_id)
    if reason in RETRY_REASONS or status in (429, 500, 502, 503, 504):
        return PushResult(Outcome.RETRY, reason, status, retry_after, apns_id)
    return PushResult(Outcome.REJECTED, reason, status, None, apns_id)


def retry_after_of(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return seconds if 0 <= seconds <= 86400 else None


def goaway_reason(debug_data: bytes | None) -> str:
    """APNs puts ``{"reason": "..."}`` in a GOAWAY's debug data."""
    return reason_of(debug_data or b"") or (debug_data or b"")[:100].decode("utf-8", "replace")
