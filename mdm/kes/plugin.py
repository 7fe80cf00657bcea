"""KES identity on the ``kes`` listener: the peer resolver (``keys.PEERS``), info, register,
certificate, renewal and unenroll; the binding cache's invalidation across replicas; the refused
requests' security events; the KES ``Renewer``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from mdm.core.identity import BindingCache, DeviceBindings
from mdm.core.identity_invalidation import track_bindings, watch_bindings
from mdm.core.identity_notify import listen
from mdm.core.security_events import RejectionLog
from mdm.db.models import Protocol
from mdm.kes import handshake
from mdm.kes.config import KesConfig
from mdm.kes.handlers_enroll import Handlers, install_routes
from mdm.kes.identity import BindingSource, KesPeerResolver, Rejections, add_mutual_auth
from mdm.kes.keys import PEERS
from mdm.kes.renewal import KesRenewer
from mdm.kes.service_enroll import KesEnrollService
from mdm.kes.status import AndroidSource
from mdm.kes.tables import KesDevice
from mdm.pki import services as pki_services
from mdm.push.transports import FCM_CLIENT
from mdm.server import kcd
from mdm.server.context import ServerContext, ServiceKey
from mdm.server.peers import networks
from mdm.server.plugin import Plugin, Worker

# NOTIFY channel of every transaction that ends or moves a KES device's binding.
BINDING_CHANNEL = "mdm_kes_binding"


@dataclass
class KesIdentity:
    service: KesEnrollService
    resolver: KesPeerResolver
    rejections: Rejections
    bindings: BindingCache


IDENTITY = ServiceKey("kes.identity", KesIdentity)


def settings(ctx: ServerContext) -> KesConfig:
    return ctx.config.section(KesConfig)


async def start(ctx: ServerContext) -> None:
    cfg = settings(ctx)
    watch_bindings(Protocol.KES, KesDevice, channel=BINDING_CHANNEL)
    cache = BindingCache(cfg.identity_cache_size, cfg.binding_cache_seconds)
    track_bindings(ctx.db.engine.sync_engine, cache)
    source = BindingSource(ctx.db.engine, cfg.identity_cache_size)
    rejections = Rejections(
        ctx.db,
        RejectionLog(
            cfg.security_events_verbatim_per_interval,
            cfg.security_events_interval_seconds,
            cfg.security_events_max_sources,
        ),
    )
    listener = ctx.config.listeners.kes
    resolver = KesPeerResolver(
        pki_services.verifier(ctx), DeviceBindings(cache, source), source, rejections,
        trusted_proxies=networks(listener.trusted_proxies),
        kcd=kcd.gate(ctx, listener.trusted_proxies) if listener.kcd else None,
    )
    service = KesEnrollService(db=ctx.db, ca=pki_services.ca(ctx), sources=pki_services.sources(ctx))
    ctx.services[IDENTITY] = KesIdentity(service, resolver, rejections, cache)
    ctx.services[PEERS] = resolver
    ctx.services[pki_services.RENEWERS].register(Protocol.KES, KesRenewer())
    ctx.status.register(AndroidSource(
        enabled=lambda: ctx.config.listeners.kes.enabled,
        bound=lambda: any(key.startswith("kes:") for key in ctx.bound_ports),
        fcm_configured=lambda: ctx.services.get(FCM_CLIENT) is not None,
        default_interval=lambda: settings(ctx).sync_interval_seconds,
    ))
    if "kes" in ctx.tls:
        handshake.watch(ctx.tls["kes"], rejections)


def install(app: web.Application, ctx: ServerContext) -> None:
    identity = ctx.services[IDENTITY]
    app.on_response_prepare.append(add_mutual_auth)
    install_routes(
        app, Handlers(identity.service, identity.resolver, identity.rejections, lambda: settings(ctx))
    )


async def listen_for_bindings(ctx: ServerContext) -> None:
    """Other replicas' binding changes (PostgreSQL NOTIFY) drop this replica's cached bindings."""
    identity = ctx.services[IDENTITY]
    cache = identity.bindings
    if ctx.db.is_sqlite or cache.ttl <= 0:
        return  # SQLite is single-process: the drop at commit is exact
    await listen(ctx.db.url, {BINDING_CHANNEL: cache.drop_device}, cache.set_live, what="KES binding")


async def flush_security_events(ctx: ServerContext) -> None:
    identity = ctx.services[IDENTITY]
    await identity.rejections.log.run(identity.rejections.db)


async def stop(ctx: ServerContext) -> None:
    identity = ctx.services.get(IDENTITY)
    if identity is not None:
        await identity.rejections.log.flush(identity.rejections.db)
    ctx.services[pki_services.RENEWERS].unregister(Protocol.KES)


PLUGIN = Plugin(
    name="kes",
    startup=(start,),
    shutdown=(stop,),
    routes={"kes": install},
    workers=(
        Worker("kes.binding_notify", listen_for_bindings),
        Worker("kes.security_events", flush_security_events),
    ),
)
