"""HTTP of the KES identity on the ``kes`` listener: ``GET /kes/v1/info``, ``POST /kes/v1/register``,
``POST /kes/v1/certificate`` and ``POST /kes/v1/unenroll`` (docs/kes-protocol.md)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mdm.kes import messages
from mdm.kes.certificates import CertificateStillPending
from mdm.kes.config import KesConfig
from mdm.kes.identity import KesPeerResolver, KesRefused, Rejections
from mdm.kes.service_enroll import KesEnrollService
from mdm.pki.source_errors import SourceUnavailable
from mdm.server.bodies import read_limited
from mdm.server.middleware import REFUSAL_LOGGED_KEY, json_error

log = logging.getLogger("mdm.kes")

PREFIX = "/kes/v1"
UNAVAILABLE_RETRY_AFTER = 120  # the enterprise CA could not be asked: nothing was recorded


class Handlers:
    def __init__(
        self,
        service: KesEnrollService,
        resolver: KesPeerResolver,
        rejections: Rejections,
        settings: Callable[[], KesConfig],
    ) -> None:
        self.service = service
        self.resolver = resolver
        self.rejections = rejections
        self.settings = settings

    async def _message(self, request: web.Request, name: str) -> dict[str, Any]:
        body = await read_limited(request, self.settings().max_body_bytes)
        return messages.parse(name, body)

    async def _reported(
        self, request: web.Request, work: Awaitable[dict[str, Any]], *, identifier: str | None = None
    ) -> web.Response:
        """Run ``work``; a refusal of the token or the device is a security event too."""
        try:
            answer = await work
        except KesRefused as exc:
            await self.rejections.identity(exc, peer=request.remote, path=request.path, identifier=identifier)
            raise
        return web.json_response(answer)

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.service.info())

    async def register(self, request: web.Request) -> web.Response:
        msg = await self._message(request, "register")
        return await self._reported(
            request, self.service.register(msg), identifier=msg["device"]["device_id"]
        )

    async def certificate(self, request: web.Request) -> web.Response:
        msg = await self._message(request, "certificate")
        try:
            if "token" in msg:
                return await self._reported(
                    request, self.service.enroll_certificate(msg), identifier=msg["device_id"]
                )
            peer = await self.resolver.require_device(request)  # reports its own refusals (401 without one)
            return await self._reported(
                request, self.service.renew_certificate(peer, msg), identifier=peer.identifier
            )
        except (CertificateStillPending, SourceUnavailable) as exc:
            # Retry later (docs/kes-protocol.md): the same request again after Retry-After seconds.
            wait = exc.retry_after if isinstance(exc, CertificateStillPending) else UNAVAILABLE_RETRY_AFTER
            log.info("kes certificate request: %s (retry after %d s)", exc.message, wait,
                     extra={"code": exc.code})
            request[REFUSAL_LOGGED_KEY] = True
            response = json_error(exc.status, exc.code, exc.message, retry_after=wait)
            response.headers["Retry-After"] = str(wait)
            return response

    async def unenroll(self, request: web.Request) -> web.Response:
        msg = await self._message(request, "unenroll")
        peer = await self.resolver.resolve(request, managed=False)
        return web.json_response(await self.service.unenroll(peer, msg))


def install_routes(app: web.Application, handlers: Handlers) -> None:
    app.router.add_get(f"{PREFIX}/info", handlers.info)
    app.router.add_post(f"{PREFIX}/register", handlers.register)
    app.router.add_post(f"{PREFIX}/certificate", handlers.certificate)
    app.router.add_post(f"{PREFIX}/unenroll", handlers.unenroll)
