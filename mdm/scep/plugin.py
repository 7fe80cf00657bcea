"""Start-up wiring of SCEP: config section, RA certificates, routes, admin API, housekeeping."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mdm.config_reload import hot
from mdm.pki.services import CA, SOURCES, VERIFIER
from mdm.scep import challenges, handlers, ra
from mdm.scep.approval_service import ScepApprovals
from mdm.scep.keys import APPROVALS, SCEP
from mdm.scep.service import ScepService, ScepState
from mdm.scep.settings import settings
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.scep")
PURGE_INTERVAL_SECONDS = 3600


async def start_scep(ctx: ServerContext) -> None:
    conf = settings(ctx.config)
    ctx.services[APPROVALS] = ScepApprovals(ctx.db, ctx.services[SOURCES], conf)
    if not conf.enabled:
        return
    credentials = await asyncio.to_thread(
        ra.ensure, ctx.config.data_path, ctx.services[CA], ctx.config.ca_passphrase(), ctx.config.hostname
    )
    state = ScepState(conf, credentials, conf.static_secret())
    ctx.services[SCEP] = ScepService(
        ctx.db, state, ctx.services[SOURCES], ctx.services[VERIFIER], ctx.config.pki.request_poll_seconds
    )


def _reload_settings(ctx: ServerContext) -> None:
    """mdm reload: every key but ``enabled`` (the routes are installed at start) is read from the
    state at each request."""
    conf = settings(ctx.config)
    approvals = ctx.services.get(APPROVALS)
    if approvals is not None:
        approvals.settings = conf
    service = ctx.services.get(SCEP)
    if service is not None:
        service.state = ScepState(conf, service.state.ra, conf.static_secret())


def install(app: web.Application, ctx: ServerContext) -> None:
    if SCEP in ctx.services:
        handlers.install(app, ctx)


async def purge_challenges(ctx: ServerContext) -> None:
    while True:
        async with ctx.db.transaction() as session:
            removed = await challenges.purge(session)
        if removed:
            log.info("scep: purged %d used or expired challenges", removed)
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


PLUGIN = Plugin(
    name="scep",
    startup=(start_scep,),
    routes={"ios": install},
    workers=(Worker("scep-purge", purge_challenges),),
    hot=(hot(
        *(f"scep.{key}" for key in (
            "static_challenge", "static_challenge_file", "cert_type", "validity_days", "manual_approval",
            "max_clock_skew_seconds", "max_message_bytes", "min_rsa_bits",
        )),
        apply=_reload_settings,
    ),),
)
