"""Registers enrollment: the registry of platform profile builders (platforms register into it at
their start-up), the web listener's one-time links and the worker that expires unused links. The
admin API routes (``handlers_api.router``) are composed in ``mdm.plugins``."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mdm.config_reload import hot
from mdm.enroll import handlers_web
from mdm.enroll.config import smtp_config
from mdm.enroll.expiry import BATCH, expire_due
from mdm.enroll.seams import PROFILE_BUILDERS, ProfileBuilders
from mdm.enroll.status import EnrollmentSource
from mdm.push.topic import log_push_identity
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.enroll")
EXPIRY_INTERVAL_SECONDS = 60.0


def install(app: web.Application, ctx: ServerContext) -> None:
    handlers_web.install(app)


async def start_enroll(ctx: ServerContext) -> None:
    ctx.services[PROFILE_BUILDERS] = ProfileBuilders()
    ctx.status.register(EnrollmentSource(lambda: bool(smtp_config(ctx.config).host)))
    await log_push_identity(ctx)


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
    workers=(Worker("enroll.expiry", expire_links),),
    hot=(
        hot("enroll", "smtp"),  # read from ctx.config at every request
        hot("apns", apply=log_push_identity),  # read at each enrollment; a reload reports the identity
    ),
)
