"""KES sync on the ``kes`` listener: commands, results, inventory, policy, mugshots, long poll and
wake-ups. Starts after ``mdm.kes.plugin`` (the peer resolver), ``mdm.policies.plugin`` (the policy
resolver, optional) and push (the FCM dispatcher, optional, which this plugin wraps)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mdm.config_reload import hot
from mdm.core.security_events import RejectionLog
from mdm.db.models import Protocol
from mdm.kes import config as kes_config
from mdm.kes import wakeups
from mdm.kes.commands import KesCommandTranslator
from mdm.kes.handlers_sync import SyncHandlers, install_routes
from mdm.kes.keys import PEERS
from mdm.kes.keys_sync import MUGSHOTS, PUSHER, SYNC
from mdm.kes.longpoll import LongPolls
from mdm.kes.service_mugshot import MugshotService
from mdm.kes.service_sync import SyncService
from mdm.policies.seams import POLICIES
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.kes.sync")

TRANSLATOR = KesCommandTranslator()
LAST_SYNC_FLUSH_SECONDS = 5.0


def settings(ctx: ServerContext) -> kes_config.KesConfig:
    return ctx.config.section(kes_config.KesConfig)


async def start(ctx: ServerContext) -> None:
    cfg = settings(ctx)
    ctx.translators.register(Protocol.KES, TRANSLATOR)
    longpolls = LongPolls(cfg.long_poll_max_waiters)
    service = SyncService(
        ctx.db, cfg, ctx.translators, ctx.services.get(POLICIES), longpolls,
        RejectionLog(cfg.security_events_verbatim_per_interval, cfg.security_events_interval_seconds,
                     cfg.security_events_max_sources),
    )
    ctx.services[SYNC] = service
    ctx.services[MUGSHOTS] = MugshotService(ctx.db)
    # The KES pusher: long polls first, then FCM (when the push plugin registered it).
    inner = ctx.pushers.get(Protocol.KES)
    if inner is not None:
        ctx.pushers.unregister(Protocol.KES)
    pusher = wakeups.KesPusher(inner, longpolls, service.woken, ctx.db)
    ctx.pushers.register(Protocol.KES, pusher)
    ctx.services[PUSHER] = pusher


async def stop(ctx: ServerContext) -> None:
    pusher = ctx.services.pop(PUSHER)
    if pusher is not None:
        ctx.pushers.unregister(Protocol.KES)
        if pusher.inner is not None:
            ctx.pushers.register(Protocol.KES, pusher.inner)  # push's own stop unregisters it
    service = ctx.services.pop(SYNC)
    if service is not None:
        service.longpolls.wake_all()
        await service.close()
        try:
            await service.last_sync.flush(service.db)
            await service.rejections.flush(service.db)
        except Exception as exc:
            log.warning("kes sync: the last flush failed: %s", exc)
    ctx.services.pop(MUGSHOTS)
    ctx.translators.unregister(Protocol.KES)


def install(app: web.Application, ctx: ServerContext) -> None:
    install_routes(app, SyncHandlers(
        ctx.services[SYNC], ctx.services[MUGSHOTS], lambda: ctx.services[PEERS], lambda: settings(ctx),
    ))


def _reload_settings(ctx: ServerContext) -> None:
    service = ctx.services.get(SYNC)
    if service is not None:
        service.config = settings(ctx)


async def flush_last_sync(ctx: ServerContext) -> None:
    service = ctx.services[SYNC]
    while True:
        await asyncio.sleep(LAST_SYNC_FLUSH_SECONDS)
        try:
            await service.last_sync.flush(service.db)
        except Exception as exc:  # the rows stay pending for the next flush
            log.warning("kes last-sync flush failed, will retry: %s", exc)


async def listen_for_wakeups(ctx: ServerContext) -> None:
    service = ctx.services[SYNC]
    if ctx.db.is_sqlite:
        return  # single process: the wake-up reaches the long polls directly
    await wakeups.listen(ctx.db.url, service.longpolls, service.woken, service.forget_all)


async def flush_security_events(ctx: ServerContext) -> None:
    service = ctx.services[SYNC]
    await service.rejections.run(service.db)


PLUGIN = Plugin(
    name="kes_sync",
    startup=(start,),
    shutdown=(stop,),
    routes={"kes": install},
    workers=(
        Worker("kes.last_sync", flush_last_sync),
        Worker("kes.wakeups", listen_for_wakeups),
        Worker("kes.sync_security_events", flush_security_events),
    ),
    hot=(
        # Read from the service's config at every sync; the caches keep their start-up sizes.
        hot(
            *(f"{kes_config.SECTION}.{key}" for key in (
                "sync_interval_seconds", "long_poll_max_seconds", "min_sync_spacing_seconds",
                "max_commands_per_sync", "command_redelivery_seconds",
            )),
            apply=_reload_settings,
        ),
    ),
)
