"""Registers enrollment: config sections, admin API routes, the web listener's one-time links and
the worker that expires unused links."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mdm.enroll import api, config  # noqa: F401 - they register routes and config sections on import
from mdm.enroll import web as enroll_web
from mdm.enroll.service import expire_due
from mdm.server import registry
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.enroll")
EXPIRY_INTERVAL_SECONDS = 60.0


@registry.route_installer("web")
def install(app: web.Application, ctx: ServerContext) -> None:
    enroll_web.install(app)


@registry.worker("enroll.expiry")
async def expire_links(ctx: ServerContext) -> None:
    while True:
        while True:
            async with ctx.db.transaction() as session:
                count = await expire_due(session)
            if count:
                log.info("expired %d unused enrollment link(s)", count)
            if count < 500:
                break
        await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)
