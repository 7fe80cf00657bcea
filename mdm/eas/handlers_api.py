"""Admin API of EAS discovery: the run's state and an on-demand run (``/api/v1/eas/discovery``),
the mailboxes Exchange listed (``/eas/mailboxes``) and an EAS device's partnerships with their
statistics and wipe state (``/eas/devices/{id}``). Reads need ``devices:read``; asking for a
run needs ``devices:write`` (and is audited, as every mutating request)."""

from __future__ import annotations

from aiohttp import web

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.eas import schemas as s
from mdm.eas.keys import DISCOVERY, VIEWS
from mdm.eas.service_views import EasViews
from mdm.server.context import ctx_of

router = ApiRouter()  # joined into the admin API by mdm.plugins
TAG = "eas"


def _views(request: web.Request) -> EasViews:
    return ctx_of(request).services[VIEWS]


@router.route(
    "GET",
    "/eas/discovery",
    summary="The last (or current) discovery run of Exchange",
    tag=TAG,
    scope="devices:read",
    response=s.DiscoveryOut,
)
async def eas_get_discovery(request: web.Request) -> s.DiscoveryOut:
    return s.DiscoveryOut.of(await ctx_of(request).services[DISCOVERY].state())


@router.route(
    "POST",
    "/eas/discovery",
    summary="Ask for a discovery run now (the discovering replica starts it within seconds)",
    tag=TAG,
    scope="devices:write",
    response=s.DiscoveryOut,
    status=202,
)
async def eas_request_discovery(request: web.Request) -> s.DiscoveryOut:
    worker = ctx_of(request).services[DISCOVERY]
    return s.DiscoveryOut.of(await worker.request(by=str(request[PRINCIPAL_KEY].name)))


@router.route(
    "GET",
    "/eas/mailboxes",
    summary="Mailboxes discovered in Exchange, in id order",
    tag=TAG,
    scope="devices:read",
    query=s.MailboxQuery,
    response=s.MailboxPage,
)
async def eas_list_mailboxes(request: web.Request, query: s.MailboxQuery) -> s.MailboxPage:
    rows = await _views(request).mailboxes(
        limit=query.limit, after=int(query.cursor) if query.cursor else None, query=query.q
    )
    cursor = str(rows[-1].id) if len(rows) == query.limit else None
    return s.MailboxPage(items=[s.MailboxOut.of(m) for m in rows], next_cursor=cursor)


@router.route(
    "GET",
    "/eas/mailboxes/{id}",
    summary="One mailbox with its ActiveSync partnerships",
    tag=TAG,
    scope="devices:read",
    response=s.MailboxDetail,
)
async def eas_get_mailbox(request: web.Request, id: int) -> s.MailboxDetail:
    mailbox, parts = await _views(request).mailbox(id)
    return s.MailboxDetail(
        **s.MailboxOut.of(mailbox).model_dump(),
        partnerships=[s.PartnershipOut.of(p, mailbox.identity) for p in parts],
    )


@router.route(
    "GET",
    "/eas/devices/{id}",
    summary="An EAS device's partnerships, statistics and wipe state",
    tag=TAG,
    scope="devices:read",
    response=s.EasDeviceOut,
)
async def eas_get_device(request: web.Request, id: int) -> s.EasDeviceOut:
    view = await _views(request).device(id)
    d = view.device
    return s.EasDeviceOut(
        device_id=d.id,
        identifier=d.identifier,
        status=d.status,
        model=d.model,
        os_name=d.os_name,
        os_version=d.os_version,
        user_id=d.user_id,
        last_seen_at=d.last_seen_at,
        partnerships=[s.PartnershipOut.of(p, mbx) for p, mbx in view.partnerships],
    )
