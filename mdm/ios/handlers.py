"""Thin aiohttp handlers of the iOS listener: read a bounded body, identify the sender, parse,
call the service, write the answer."""

from __future__ import annotations

from aiohttp import web

from mdm.ios import channel, checkin
from mdm.ios.identity import (
    CLIENT_CERT_CHAIN_HEADER,
    CLIENT_CERT_HEADER,
    SIGNATURE_HEADER,
    Identity,
    IdentityError,
)
from mdm.ios.messages import load_plist, parse_checkin, parse_report
from mdm.ios.service import IosService
from mdm.server.bodies import BodyTooLarge, read_limited
from mdm.server.kcd import KcdGate, KcdRefused, KcdUser
from mdm.server.middleware import REFUSAL_LOGGED_KEY

SERVICE = web.AppKey("mdm_ios_service", IosService)
# Present when the listener has kcd = true: the publishing proxy's Negotiate names the user.
KCD = web.AppKey("mdm_ios_kcd", KcdGate)
CHECKIN_PATH = "/mdm/checkin"
SERVER_PATH = "/mdm/server"
PLIST_TYPE = "application/xml; charset=utf-8"
MAX_CACHED_BODY = 1024


def _peer(request: web.Request) -> str | None:
    # The TCP peer as recorded when the request arrived (still known once the client has left).
    return request.remote


def identify(svc: IosService, request: web.Request, body: bytes) -> Identity:
    headers = request.headers
    signature = headers.get(SIGNATURE_HEADER)
    tls_der = None
    if signature is None:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            tls_der = ssl_object.getpeercert(binary_form=True)
    return svc.resolver.identify(
        body,
        signature=signature,
        tls_der=tls_der,
        client_cert=headers.get(CLIENT_CERT_HEADER),
        client_cert_chain=headers.get(CLIENT_CERT_CHAIN_HEADER),
        peer=_peer(request),
    )


async def kcd_user(request: web.Request) -> KcdUser | None:
    """The user the trusted proxy authenticated (kcd listeners); refusals are 400, never 401."""
    gate = request.app.get(KCD)
    if gate is None:
        return None
    try:
        return await gate.user(request)
    except KcdRefused as exc:
        raise IdentityError(exc.reason, exc.message) from None


async def check_owner(request: web.Request, user: KcdUser | None, device_id: int) -> None:
    gate = request.app.get(KCD)
    if gate is None or user is None:
        return
    try:
        await gate.check_owner(user, device_id)
    except KcdRefused as exc:
        raise IdentityError(exc.reason, exc.message) from None


def _mutual(user: KcdUser | None) -> dict[str, str]:
    return {"WWW-Authenticate": user.www_authenticate} if user is not None else {}


async def _rejected(
    svc: IosService, request: web.Request, exc: IdentityError, identifier: str | None
) -> None:
    request[REFUSAL_LOGGED_KEY] = True  # the service logs it (or counts it, in a flood)
    await svc.identity_rejected(exc, peer=_peer(request), path=request.path, identifier=identifier)


async def checkin_handler(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    cfg = svc.config
    body = await read_limited(request, cfg.max_body_bytes, error=BodyTooLarge)
    message = parse_checkin(load_plist(body, max_depth=cfg.max_plist_depth, max_nodes=cfg.max_plist_nodes))
    try:
        user = await kcd_user(request)
        identity = identify(svc, request, body)
        result = await checkin.handle(svc, identity, message, owner=user.user_id if user else None)
    except IdentityError as exc:
        await _rejected(svc, request, exc, message.identifier)
        raise
    return web.Response(
        status=result.status, body=result.body, content_type=result.content_type, headers=_mutual(user)
    )


async def server_handler(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    cfg = svc.config
    body = await read_limited(request, cfg.max_body_bytes, error=BodyTooLarge)
    small = len(body) <= MAX_CACHED_BODY and cfg.parse_cache_size > 0
    report = svc.idle_reports.get(body) if small else None
    if report is None:
        report = parse_report(load_plist(body, max_depth=cfg.max_plist_depth, max_nodes=cfg.max_plist_nodes))
        if small and report.is_idle:
            svc.idle_reports[body] = report
    try:
        user = await kcd_user(request)
        identity = identify(svc, request, body)
        binding = await svc.binding_of(identity, report.identifier)
        await check_owner(request, user, binding.device_id)
    except IdentityError as exc:
        await _rejected(svc, request, exc, report.identifier)
        raise
    svc.last_seen.touch(binding.device_id)
    try:
        result = await channel.handle(svc, binding, report)
    except channel.ReplayError as exc:
        request[REFUSAL_LOGGED_KEY] = True
        await svc.message_rejected(
            "replay", exc.message, device_id=binding.device_id, path=request.path, peer=_peer(request)
        )
        raise
    if not result.body:
        return web.Response(headers=_mutual(user))
    return web.Response(body=result.body, headers={"Content-Type": PLIST_TYPE, **_mutual(user)})


def install_routes(app: web.Application, svc: IosService, kcd: KcdGate | None = None) -> None:
    app[SERVICE] = svc
    if kcd is not None:
        app[KCD] = kcd
    app.router.add_put(CHECKIN_PATH, checkin_handler)
    app.router.add_put(SERVER_PATH, server_handler)
