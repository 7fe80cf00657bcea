"""Registers enrollment: the registry of platform profile builders (platforms register into it at
their start-up), the web listener's one-time links and the worker that expires unused links. The
admin API routes (``handlers_api.router``) are composed in ``mdm.plugins``."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mdm.config_reload import hot
from mdm.core.security_events import RejectionLog
from mdm.enroll import handlers_web
from mdm.enroll.config import smtp_config
from mdm.enroll.expiry import BATCH, expire_due
from mdm.enroll.seams import PROFILE_BUILDERS, ProfileBuilders
from mdm.enroll.service_kcd import LinkKerberos
from mdm.enroll.status import EnrollmentSource
from mdm.push.topic import log_push_identity
from mdm.server import kcd
from mdm.server.context import ServerContext, ServiceKey
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.enroll")
EXPIRY_INTERVAL_SECONDS = 60.0
# Set when the web listener has kcd = true: its Negotiate gate and the link-owner check.
WEB_KCD = ServiceKey("enroll.web_kcd", kcd.KcdGate)
LINK_KERBEROS = ServiceKey("enroll.link_kerberos", LinkKerberos)


def install(app: web.Application, ctx: ServerContext) -> None:
    gate, links = ctx.services.get(WEB_KCD), ctx.services.get(LINK_KERBEROS)
    handlers_web.install(app, (gate, links) if gate is not None and links is not None else None)


async def start_enroll(ctx: ServerContext) -> None:
    ctx.services[PROFILE_BUILDERS] = ProfileBuilders()
    ctx.status.register(EnrollmentSource(lambda: bool(smtp_config(ctx.config).host)))
    await log_push_identity(ctx)
    listener = ctx.config.listeners.web
    if listener.enabled and listener.kcd:
        ctx.services[WEB_KCD] = kcd.gate(ctx, listener.trusted_proxies)
        ctx.services[LINK_KERBEROS] = LinkKerberos(ctx.db, RejectionLog())


async def flush_link_rejections(ctx: ServerContext) -> None:
    """The aggregates of the kcd refusals of one-time links (idle without kcd)."""
    links = ctx.services.get(LINK_KERBEROS)
    if links is None:
        await asyncio.Event().wait()
        return
    await links.rejections.run(ctx.db)


async def expire_links(ctx: ServerContext) -> None:
    while True:
        while True:
            async with ctx.db.transaction() as session:
                count = await expire_due(session)
            if count:
                log.info("expired %d unused enrollment link(s)", count)
            if count < BATCH:
                break
        await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)


PLUGIN = Plugin(
    name="enroll",
    startup=(start_enroll,),
    routes={"web": install},
    workers=(Worker("enroll.expiry", expire_links), Worker("enroll.kcd_rejections", flush_link_rejections)),
    hot=(
        hot("enroll", "smtp"),  # read from ctx.config at every request
        hot("apns", apply=log_push_identity),  # read at each enrollment; a reload reports the identity
    ),
)
