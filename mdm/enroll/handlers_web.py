"""The web listener's one-time enrollment links: ``GET /e/{token}`` serves the signed profile (an
Android enrollment package, with its own media type) once.

People open these links in a browser, so refusals are short plain-text pages with the right
status (404 unknown, 410 used/expired/revoked, 422 the CA denied the identity, 503 cannot be
built now, with ``Retry-After`` while the CA holds the identity's request) rather than API JSON.
GET only: a HEAD must not consume the link.

The profile carries a PKCS#12 and its password, so it is served over TLS only: on the plain-HTTP
port (8060) it is refused with 403 before the link is looked at (the link stays usable), unless
the TCP peer is one of ``listeners.web.trusted_proxies`` and says it terminated TLS
(``X-Forwarded-Proto: https`` or ``Forwarded: proto=https``).

With ``[listeners.web] kcd = true`` a link is served only to a trusted proxy that sends
``Authorization: Negotiate`` in the name of the link's user (``mdm.server.kcd``), before the link
is claimed: 401 with a ``Negotiate`` challenge when it sends none, 403 otherwise (another
address, a ticket that does not authenticate, a principal that is no user or another user); the
answer carries the mutual-authentication token. The CRL and CA certificates stay open.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mdm.core.errors import ServiceError
from mdm.enroll import links
from mdm.enroll.download import download
from mdm.enroll.identity import IdentityPending
from mdm.enroll.seams import PackageBuilder, env_of
from mdm.enroll.service_kcd import LinkKerberos, OtherUsersLink
from mdm.server import peers
from mdm.server.context import CTX, ctx_of
from mdm.server.kcd import KcdGate, KcdRefused, KcdUser

log = logging.getLogger("mdm.enroll")
TRUSTED_PROXIES = web.AppKey("mdm_web_trusted_proxies", tuple)
# Present when the web listener has kcd = true.
_GATE = web.AppKey("mdm_web_kcd_gate", KcdGate)
_LINKS = web.AppKey("mdm_web_link_kerberos", LinkKerberos)

PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"
_HINTS = {
    404: "Check that the whole link was copied.",
    410: "Ask your administrator for a new enrollment link.",
    503: "Try again later, or tell your administrator.",
}


def _page(status: int, message: str, hint: str | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    text = f"{message[:1].upper()}{message[1:]}.\n{_HINTS.get(status, '') if hint is None else hint}\n"
    return web.Response(status=status, text=text, content_type="text/plain",
                        headers={"Cache-Control": "no-store", **(headers or {})})


async def _kerberos(request: web.Request, gate: KcdGate, checker: LinkKerberos) -> KcdUser | web.Response:
    """The link's own user, authenticated by the trusted proxy, or the refusal page. Nothing is
    claimed here: a refused link stays usable."""
    peer = peers.peer_address(request)
    principal: str | None = None
    enrollment_id: int | None = None
    try:
        if not peers.peer_in(request, gate.trusted_proxies):
            # Checked first, whatever the headers: no Kerberos work for anyone else.
            raise KcdRefused(
                "untrusted_proxy", f"links are served only through the publishing proxy, not to {peer}"
            )
        user = await gate.user(request)
        principal = user.principal
        await checker.check_owner(request.match_info["token"], user.user_id)
        return user
    except KcdRefused as exc:
        reason, message, principal = exc.reason, exc.message, exc.principal or principal
    except OtherUsersLink as exc:
        reason, message, enrollment_id = "other_user", exc.message, exc.enrollment_id
    await checker.rejected(reason, message, peer=peer, principal=principal, enrollment_id=enrollment_id)
    if reason == "missing":
        return _page(401, "this enrollment link needs your Windows sign-in (Kerberos)",
                     "Open the link through your organisation's portal.", {"WWW-Authenticate": "Negotiate"})
    return _page(403, "this enrollment link cannot be opened with this sign-in",
                 "Sign in as the user the link was sent to, or ask your administrator.")


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
    mutual: dict[str, str] = {}
    gate = request.app.get(_GATE)
    if gate is not None:
        user = await _kerberos(request, gate, request.app[_LINKS])
        if isinstance(user, web.Response):
            return user
        mutual = {"WWW-Authenticate": user.www_authenticate}
    env = env_of(ctx)
    try:
        served = await download(env, ctx.db, request.match_info["token"], peer=request.remote)
    except ServiceError as exc:
        log.info("enrollment link refused: %s (%d)", exc.message, exc.status)
        if isinstance(exc, IdentityPending):  # the link stays valid: the CA decides first
            return _page(exc.status, exc.message, "The link stays valid: open it again later.",
                         {**mutual, "Retry-After": str(exc.retry_after)})
        return _page(exc.status, exc.message, headers=mutual)
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
            **mutual,
        },
    )


def install(app: web.Application, kcd: tuple[KcdGate, LinkKerberos] | None = None) -> None:
    app[TRUSTED_PROXIES] = peers.networks(app[CTX].config.listeners.web.trusted_proxies)
    if kcd is not None:
        app[_GATE], app[_LINKS] = kcd
    app.router.add_route("GET", links.LINK_PATH + "{token}", get_profile, name="enroll_profile")
