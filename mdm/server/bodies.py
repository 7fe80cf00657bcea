"""Reading a request body with a limit, for the device listeners' handlers.

Hand-written because aiohttp's ``client_max_size`` is one limit per application and answers with
its own exception after buffering up to it; devices get a 413 as soon as the body is known to be
too large (the declared length first), and never more than ``limit`` bytes are held.
"""

from __future__ import annotations

from aiohttp import web

from mdm.core.errors import ServiceError


class BodyTooLarge(ServiceError):
    """413 as the admin, iOS and SCEP listeners name it (the middleware's ``body_too_large``)."""

    status = 413
    code = "body_too_large"


class PayloadTooLarge(ServiceError):
    """413 as the KES protocol names it (``docs/kes-protocol.md``)."""

    status = 413
    code = "payload_too_large"


async def read_limited(
    request: web.Request, limit: int, what: str = "the body", error: type[ServiceError] = PayloadTooLarge
) -> bytes:
    """The body, or ``error`` (413) as soon as it is known to exceed ``limit``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise error(f"{what} of {declared} bytes is above the limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise error(f"{what} is above the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
