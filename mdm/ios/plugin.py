"""Registers the iOS check-in and command channel on the ``ios`` listener, the service built at
start-up, and the last-seen write-behind worker."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from cachetools import LRUCache

from mdm.config_reload import hot
from mdm.core.identity import BindingCache
from mdm.core.security_events import RejectionLog
from mdm.db.models import Protocol
from mdm.ios import config as ios_config
from mdm.ios import notify, renewal
from mdm.ios.commands import IosCommandTranslator
from mdm.ios.commands_config import IosCommandsConfig
from mdm.ios.handlers import install_routes
from mdm.ios.identity import IdentityResolver
from mdm.ios.profile_signer import SlotSigner
from mdm.ios.service import IosService
from mdm.ios.state import QueueHint
from mdm.pki import services as pki_plugin
from mdm.server import kcd
from mdm.server.context import ServerContext, ServiceKey
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.ios")
SERVICE = ServiceKey("ios.service", IosService)
KCD = ServiceKey("ios.kcd", kcd.KcdGate)
TRANSLATOR = IosCommandTranslator()


def settings(ctx: ServerContext) -> ios_config.IosConfig:
    return ctx.config.section(ios_config.IosConfig)


def service(ctx: ServerContext) -> IosService:
    return ctx.services[SERVICE]


async def configure_signing(ctx: ServerContext) -> None:
    """The ``ios`` slot certificate signs configuration profiles (``[ios_commands]``); the
    translator is registered for ``Protocol.IOS`` (re-registering on reload is harmless)."""
    ctx.translators.register(Protocol.IOS, TRANSLATOR)
    settings_ = ctx.config.section(IosCommandsConfig)
    TRANSLATOR.configure_signing(SlotSigner(ctx.config.certs_dir), by_default=settings_.sign_profiles)


async def unconfigure_signing(ctx: ServerContext) -> None:
    TRANSLATOR.configure_signing(None, by_default=False)


async def start_ios(ctx: ServerContext) -> None:
    cfg = settings(ctx)
    renewal.register(ctx)  # the identity renewer of the pki.renewal worker
    resolver = IdentityResolver(
        pki_plugin.verifier(ctx),
        trusted_proxies=ctx.config.listeners.ios.trusted_proxies,
        signature_max_age=cfg.signature_max_age,
        cache_size=cfg.identity_cache_size,
    )
    listener = ctx.config.listeners.ios
    if listener.kcd:
        ctx.services[KCD] = kcd.gate(ctx, listener.trusted_proxies)
    ctx.services[SERVICE] = IosService(
        db=ctx.db,
        config=cfg,
        resolver=resolver,
        bindings=BindingCache(cfg.identity_cache_size, cfg.binding_cache_seconds),
        hint=QueueHint(cfg.queue_hint_seconds, cfg.identity_cache_size),
        # (0 disables it: the handler neither reads nor fills it then)
        idle_reports=LRUCache(maxsize=max(cfg.parse_cache_size, 1)),
        translators=ctx.translators,
        pushers=ctx.pushers,
        rejections=RejectionLog(
            cfg.security_events_verbatim_per_interval,
            cfg.security_events_interval_seconds,
            cfg.security_events_max_sources,
        ),
    )


def _reload_settings(ctx: ServerContext) -> None:
    service(ctx).config = settings(ctx)


def install(app: web.Application, ctx: ServerContext) -> None:
    install_routes(app, service(ctx), ctx.services.get(KCD))


async def flush_last_seen(ctx: ServerContext) -> None:
    svc = service(ctx)
    while True:
        await asyncio.sleep(svc.config.last_seen_flush_seconds)
        try:
            await svc.last_seen.flush(svc.db)
        except Exception as exc:  # keep polling; the rows stay pending for the next flush
            log.warning("last_seen flush failed, will retry: %s", exc)


async def listen_for_enqueues(ctx: ServerContext) -> None:
    svc = service(ctx)
    if svc.db.is_sqlite or (not svc.hint.enabled and svc.bindings.ttl <= 0):
        return  # SQLite is single-process: local invalidation is exact
    await notify.listen(svc.db.url, svc.hint, svc.bindings)


async def flush_security_events(ctx: ServerContext) -> None:
    svc = service(ctx)
    await svc.rejections.run(svc.db)


async def stop_ios(ctx: ServerContext) -> None:
    svc = ctx.services.get(SERVICE)
    if svc is not None:
        await svc.last_seen.flush(svc.db)
        await svc.rejections.flush(svc.db)


PLUGIN = Plugin(
    name="ios",
    startup=(configure_signing, start_ios),
    shutdown=(unconfigure_signing, stop_ios),
    routes={"ios": install},
    workers=(
        Worker("ios.last_seen", flush_last_seen),
        Worker("ios.queue_notify", listen_for_enqueues),
        Worker("ios.security_events", flush_security_events),
    ),
    hot=(
        # Read from service.config at every request; the caches, the identity resolver and the
        # queue hint keep their start-up settings until a restart.
        hot(
            *(f"{ios_config.SECTION}.{key}" for key in (
                "user_authenticate_enabled", "max_body_bytes", "notnow_backoff_seconds",
                "notnow_backoff_max_seconds", "last_seen_flush_seconds", "max_plist_depth", "max_plist_nodes",
            )),
            apply=_reload_settings,
        ),
        hot("ios_commands.sign_profiles", apply=configure_signing),
    ),
)
