"""HTTP side of SCEP (RFC 8894 §4): ``/scep?operation=...`` on the iOS listener."""

from __future__ import annotations

import base64
import binascii
import logging

from aiohttp import web

from mdm.core.errors import InvalidArgument, ServiceError
from mdm.scep import service
from mdm.scep.keys import SCEP
from mdm.scep.protocol import (
    CONTENT_TYPE_CA_RA_CERT,
    CONTENT_TYPE_PKI_MESSAGE,
    MalformedMessage,
)
from mdm.server.bodies import BodyTooLarge
from mdm.server.context import ServerContext, ctx_of

log = logging.getLogger("mdm.scep")

PATHS = ("/scep", "/scep/pkiclient.exe")
# Old clients post with a generic binary type (or none, which aiohttp reports as octet-stream).
ACCEPTED_POST_TYPES = {CONTENT_TYPE_PKI_MESSAGE, "application/octet-stream"}


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


def _service(request: web.Request) -> service.ScepService:
    return ctx_of(request).services[SCEP]


async def _answer(request: web.Request, der: bytes) -> web.Response:
    try:
        reply = await _service(request).pki_operation(der)
    except MalformedMessage as exc:
        raise InvalidArgument(f"PKIOperation: {exc}") from None
    return web.Response(body=reply, content_type=CONTENT_TYPE_PKI_MESSAGE)


def _limit(request: web.Request) -> int:
    return _service(request).state.settings.max_message_bytes


async def scep_get(request: web.Request) -> web.Response:
    operation = request.query.get("operation", "")
    if operation == "GetCACaps":
        return web.Response(text=service.capabilities(), content_type="text/plain")
    if operation == "GetCACert":
        return web.Response(body=_service(request).ca_certificates(), content_type=CONTENT_TYPE_CA_RA_CERT)
    if operation == "PKIOperation":
        message = request.query.get("message", "")
        if not message:
            raise InvalidArgument("PKIOperation by GET needs the base64 pkiMessage in the message parameter")
        if len(message) > _limit(request) * 4 // 3 + 4:
            raise BodyTooLarge(f"message is larger than scep.max_message_bytes ({_limit(request)})")
        try:
            # A '+' that was not percent-encoded arrives as a space.
            der = base64.b64decode(message.replace(" ", "+"), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("message parameter is not valid base64") from None
        return await _answer(request, der)
    if not operation:
        raise InvalidArgument("missing operation parameter (GetCACaps, GetCACert, PKIOperation)")
    raise InvalidArgument(
        f"unsupported operation {operation[:40]!r} (supported: GetCACaps, GetCACert, PKIOperation)"
    )


async def scep_post(request: web.Request) -> web.Response:
    operation = request.query.get("operation", "")
    if operation != "PKIOperation":
        raise InvalidArgument("POST supports only operation=PKIOperation")
    if request.content_type not in ACCEPTED_POST_TYPES:
        raise UnsupportedMediaType(
            f"expected Content-Type {CONTENT_TYPE_PKI_MESSAGE}, got {request.content_type or 'none'}"
        )
    limit = _limit(request)
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"pkiMessage is larger than scep.max_message_bytes ({limit})")
    der = await request.content.read(limit + 1)
    if len(der) > limit:
        raise BodyTooLarge(f"pkiMessage is larger than scep.max_message_bytes ({limit})")
    return await _answer(request, der)


def install(app: web.Application, ctx: ServerContext) -> None:
    for path in PATHS:
        app.router.add_route("GET", path, scep_get)
        app.router.add_route("POST", path, scep_post)
