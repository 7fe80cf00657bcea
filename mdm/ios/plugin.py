"""Registers the iOS check-in and command channel on the ``ios`` listener, the service built at
start-up, and the last-seen write-behind worker."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mdm.config_reload import hot
from mdm.core.security_events import RejectionLog
from mdm.ios import config as ios_config
from mdm.ios import notify, renewal
from mdm.ios.handlers import install_routes
from mdm.ios.identity import LRU, BindingCache, IdentityResolver
from mdm.ios.service import IosService
from mdm.ios.state import QueueHint
from mdm.pki import plugin as pki_plugin
from mdm.server import registry
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.ios")
SERVICE = "ios.service"


def settings(ctx: ServerContext) -> ios_config.IosConfig:
    section = ctx.config.extensions.get(ios_config.SECTION)
    return section if isinstance(section, ios_config.IosConfig) else ios_config.IosConfig()


def service(ctx: ServerContext) -> IosService:
    svc: IosService = ctx.services[SERVICE]
    return svc


@registry.startup_hook
async def start_ios(ctx: ServerContext) -> None:
    cfg = settings(ctx)
    renewal.register()  # the identity renewer of the pki.renewal worker
    resolver = IdentityResolver(
        pki_plugin.verifier(ctx),
        trusted_proxies=ctx.config.listeners.ios.trusted_proxies,
        signature_max_age=cfg.signature_max_age,
        cache_size=cfg.identity_cache_size,
    )
    ctx.services[SERVICE] = IosService(
        db=ctx.db,
        config=cfg,
        resolver=resolver,
        bindings=BindingCache(cfg.identity_cache_size, cfg.binding_cache_seconds),
        hint=QueueHint(cfg.queue_hint_seconds, cfg.identity_cache_size),
        idle_reports=LRU(cfg.parse_cache_size),
        rejections=RejectionLog(
            cfg.security_events_verbatim_per_interval,
            cfg.security_events_interval_seconds,
            cfg.security_events_max_sources,
        ),
    )


def _reload_settings(ctx: ServerContext) -> None:
    service(ctx).config = settings(ctx)


# Read from service.config at every request (mdm reload); the caches, the identity resolver and
# the queue hint keep their start-up settings until a restart.
hot(
    *(f"{ios_config.SECTION}.{key}" for key in (
        "user_authenticate_enabled", "max_body_bytes", "notnow_backoff_seconds", "notnow_backoff_max_seconds",
        "last_seen_flush_seconds", "max_plist_depth", "max_plist_nodes",
    )),
    apply=_reload_settings,
)


@registry.route_installer("ios")
def install(app: web.Application, ctx: ServerContext) -> None:
    install_routes(app, service(ctx))


@registry.worker("ios.last_seen")
async def flush_last_seen(ctx: ServerContext) -> None:
    svc = service(ctx)
    while True:
        await asyncio.sleep(svc.config.last_seen_flush_seconds)
        try:
            await svc.last_seen.flush(svc.db)
        except Exception as exc:  # keep polling; the rows stay pending for the next flush
            log.warning("last_seen flush failed, will retry: %s", exc)


@registry.worker("ios.queue_notify")
async def listen_for_enqueues(ctx: ServerContext) -> None:
    svc = service(ctx)
    if svc.db.is_sqlite or (not svc.hint.enabled and svc.bindings.ttl <= 0):
        return  # SQLite is single-process: local invalidation is exact
    await notify.listen(svc.db.url, svc.hint, svc.bindings)


@registry.worker("ios.security_events")
async def flush_security_events(ctx: ServerContext) -> None:
    svc = service(ctx)
    await svc.rejections.run(svc.db)


@registry.shutdown_hook
async def stop_ios(ctx: ServerContext) -> None:
    svc = ctx.services.get(SERVICE)
    if isinstance(svc, IosService):
        await svc.last_seen.flush(svc.db)
        await svc.rejections.flush(svc.db)
