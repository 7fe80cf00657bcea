"""The refusals of the sync and mugshot endpoints (``docs/kes-protocol.md``, "Errors")."""

from __future__ import annotations

from mdm.core.errors import ServiceError


class UnknownCommand(ServiceError):
    """A result (or picture) for a command that is not this device's delivered command."""

    status = 409
    code = "unknown_command"


class ResultConflict(ServiceError):
    """A second result for a command that differs from the one already recorded."""

    status = 409
    code = "result_conflict"


class RequestIdReused(ServiceError):
    status = 409
    code = "request_id_reused"


class InvalidResult(ServiceError):
    """A result whose data does not fit its command (a Locate without coordinates)."""

    status = 422
    code = "invalid_result"


class SyncTooFrequent(ServiceError):
    status = 429
    code = "sync_too_frequent"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class DeviceNotManaged(ServiceError):
    status = 403
    code = "device_not_managed"


# The refusals that a bound device's own message caused (reported as security events).
DEVICE_REFUSALS = (UnknownCommand, ResultConflict, RequestIdReused, InvalidResult)
