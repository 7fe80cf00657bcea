"""The web listener's one-time enrollment links: ``GET /e/{token}`` serves the signed profile once.

People open these links in a browser, so refusals are short plain-text pages with the right
status (404 unknown, 410 used/expired/revoked, 503 cannot be built now) rather than API JSON.
GET only: a HEAD must not consume the link.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mdm.core.errors import ServiceError
from mdm.enroll import links
from mdm.enroll.service import download, env_of
from mdm.server.context import ctx_of

log = logging.getLogger("mdm.enroll")

PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"
_HINTS = {
    404: "Check that the whole link was copied.",
    410: "Ask your administrator for a new enrollment link.",
    503: "Try again later, or tell your administrator.",
}


def _page(status: int, message: str) -> web.Response:
    text = f"{message[:1].upper()}{message[1:]}.\n{_HINTS.get(status, '')}\n"
    return web.Response(status=status, text=text, content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


async def get_profile(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    try:
        profile = await download(env_of(ctx), ctx.db, request.match_info["token"], peer=request.remote)
    except ServiceError as exc:
        log.info("enrollment link refused: %s (%d)", exc.message, exc.status)
        return _page(exc.status, exc.message)
    return web.Response(
        body=profile,
        headers={
            "Content-Type": PROFILE_CONTENT_TYPE,
            "Content-Disposition": 'attachment; filename="enroll.mobileconfig"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def install(app: web.Application) -> None:
    app.router.add_route("GET", links.LINK_PATH + "{token}", get_profile, name="enroll_profile")
