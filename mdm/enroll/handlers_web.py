"""The web listener's one-time enrollment links: ``GET /e/{token}`` serves the signed profile (an
Android enrollment package, with its own media type) once.

People open these links in a browser, so refusals are short plain-text pages with the right
status (404 unknown, 410 used/expired/revoked, 503 cannot be built now) rather than API JSON.
GET only: a HEAD must not consume the link.

The profile carries a PKCS#12 and its password, so it is served over TLS only: on the plain-HTTP
port (8060) it is refused with 403 before the link is looked at (the link stays usable), unless
the TCP peer is one of ``listeners.web.trusted_proxies`` and says it terminated TLS
(``X-Forwarded-Proto: https`` or ``Forwarded: proto=https``).
"""

from __future__ import annotations

import logging

from aiohttp import web

from mdm.core.errors import ServiceError
from mdm.enroll import links
from mdm.enroll.download import download
from mdm.enroll.seams import PackageBuilder, env_of
from mdm.server import peers
from mdm.server.context import CTX, ctx_of

log = logging.getLogger("mdm.enroll")
TRUSTED_PROXIES = web.AppKey("mdm_web_trusted_proxies", tuple)

PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"
_HINTS = {
    404: "Check that the whole link was copied.",
    410: "Ask your administrator for a new enrollment link.",
    503: "Try again later, or tell your administrator.",
}


def _page(status: int, message: str, hint: str | None = None) -> web.Response:
    text = f"{message[:1].upper()}{message[1:]}.\n{_HINTS.get(status, '') if hint is None else hint}\n"
    return web.Response(status=status, text=text, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


def _over_tls(request: web.Request) -> bool:
    if request.secure:  # this listener's own TLS port
        return True
    return peers.peer_in(request, request.app[TRUSTED_PROXIES]) and peers.forwarded_proto(request) == "https"


async def get_profile(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    if not _over_tls(request):
        # Refused before the token is even looked up: the link stays valid for the HTTPS port.
        log.info("enrollment link refused: requested over plain HTTP from %s", peers.peer_address(request))
        # The token is not repeated back over plain HTTP.
        origin = links.link_base(ctx.config, ctx.bound_ports)
        return _page(403, "enrollment profiles are only served over HTTPS",
                     f"Open the link you were given, which starts with {origin}{links.LINK_PATH}")
    env = env_of(ctx)
    try:
        served = await download(env, ctx.db, request.match_info["token"], peer=request.remote)
    except ServiceError as exc:
        log.info("enrollment link refused: %s (%d)", exc.message, exc.status)
        return _page(exc.status, exc.message)
    content_type, filename = PROFILE_CONTENT_TYPE, "enroll.mobileconfig"
    builder = env.builders.get(served.platform)
    if isinstance(builder, PackageBuilder):
        content_type, filename = builder.content_type, builder.filename
    return web.Response(
        body=served.body,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def install(app: web.Application) -> None:
    app[TRUSTED_PROXIES] = peers.networks(app[CTX].config.listeners.web.trusted_proxies)
    app.router.add_route("GET", links.LINK_PATH + "{token}", get_profile, name="enroll_profile")
