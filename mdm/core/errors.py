"""Service-level errors. Handlers map them to HTTP statuses; the CLI prints their message."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class InvalidArgument(ServiceError):
    status = 400
    code = "invalid_argument"


class ArgumentsRefused(ServiceError):
    """The arguments are well-formed JSON but the command type does not take them (one device or
    many: the same answer)."""

    status = 422
    code = "invalid_argument"


class Unsupported(ServiceError):
    status = 422
    code = "unsupported"


class Gone(ServiceError):
    status = 410
    code = "gone"
