"""Admin API of push: the dispatcher's and services' state, and the devices whose push token was
refused for good (they are not pushed until they send a newer one)."""

from __future__ import annotations

from aiohttp import web

from mdm.api.framework import ApiRouter
from mdm.push.dispatcher import PushDispatcher
from mdm.push.keys import CERTIFICATE_STATUS, DISPATCHER
from mdm.push.schemas import InvalidTokenOut, InvalidTokenPage, InvalidTokenQuery, PushStatus, ServiceStatus
from mdm.server.context import ctx_of

router = ApiRouter()  # joined into the admin API by mdm.plugins


def _dispatcher(request: web.Request) -> PushDispatcher:
    return ctx_of(request).services[DISPATCHER]


@router.route("GET", "/push/status", summary="Push: owed wake-ups, invalid tokens, each service's state",
              tag="push", scope="devices:read", response=PushStatus)
async def push_status(request: web.Request) -> PushStatus:
    dispatcher = _dispatcher(request)
    owed, invalid = await dispatcher.counts()
    certificate = ctx_of(request).services.get(CERTIFICATE_STATUS)
    return PushStatus(
        owed=owed,
        invalid_tokens=invalid,
        services={name: ServiceStatus.of(stats) for name, stats in dispatcher.stats.items()},
        certificate=await certificate() if certificate is not None else None,
    )


@router.route("GET", "/push/invalid-tokens", summary="Devices whose push token was refused for good",
              tag="push", scope="devices:read", query=InvalidTokenQuery, response=InvalidTokenPage)
async def push_invalid_tokens(request: web.Request, query: InvalidTokenQuery) -> InvalidTokenPage:
    after = int(query.cursor) if query.cursor else 0
    rows = await _dispatcher(request).invalid_tokens(after, query.limit)
    cursor = str(rows[-1].device_id) if len(rows) == query.limit else None
    return InvalidTokenPage(items=[InvalidTokenOut.of(r) for r in rows], next_cursor=cursor)
