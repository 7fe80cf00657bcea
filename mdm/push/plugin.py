"""The push ``Plugin``: builds the dispatcher at start-up over the transports that can be built
(APNs for iOS, FCM for Android), registers it as the ``Pusher`` of those protocols, and runs its
worker, the recovery pass and the daily sweep.

Transports come from factories handed to ``make_plugin`` (composed in ``mdm.plugins``): a factory
answers None when its service is not configured (no push certificate, no service account), and
then no pusher is registered for that protocol: a queued command waits for the device's next
poll, as without push. A factory that fails is logged and treated the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from mdm.config_reload import HotKeys, hot
from mdm.core.push import PushReceipts
from mdm.db.models import Protocol
from mdm.push import sweeps
from mdm.push.config import push_config
from mdm.push.dispatcher import PushDispatcher, service_name
from mdm.push.keys import CERTIFICATE_STATUS, DISPATCHER
from mdm.push.status import PushSource
from mdm.push.types import PushTransport
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.push")

TransportFactory = Callable[[ServerContext], Awaitable[PushTransport | None]]
# Who hears the accepted pushes per wake-up reason (the bulk operations), read from the context
# when the dispatcher is built (the service it names is started by an earlier plugin).
ReceiptsFactory = Callable[[ServerContext], PushReceipts | None]


def dispatcher(ctx: ServerContext) -> PushDispatcher:
    return ctx.services[DISPATCHER]


def make_plugin(
    factories: Mapping[Protocol, TransportFactory] | None = None,
    *,
    extra_startup: Sequence[Callable[[ServerContext], Awaitable[None]]] = (),
    extra_workers: Sequence[Worker] = (),
    extra_hot: Sequence[HotKeys] = (),
    extra_reload: Sequence[Callable[[ServerContext], Awaitable[None]]] = (),
    receipts: ReceiptsFactory | None = None,
) -> Plugin:
    """The push plugin over these transports; ``extra_workers``/``extra_hot``: what the
    composition adds for them (the APNs certificate's expiry warnings and renewal);
    ``receipts``: the ``PushReceipts`` told after each batch how many pushes were accepted per
    reason (None, or a factory answering None: nobody is told)."""
    factories = dict(factories or {})

    async def start(ctx: ServerContext) -> None:
        transports: dict[Protocol, PushTransport] = {}
        for protocol, factory in factories.items():
            try:
                transport = await factory(ctx)
            except Exception as exc:  # a bad certificate or key must not stop the server
                log.error("push: the %s client cannot be started, %s devices are not pushed: %s",
                          service_name(protocol), protocol.name.lower(), exc)
                continue
            if transport is None:
                log.info("push: %s is not configured; %s devices are not pushed",
                         service_name(protocol), protocol.name.lower())
                continue
            transports[protocol] = transport
        service = PushDispatcher(ctx.db, push_config(ctx.config), transports,
                                 receipts=receipts(ctx) if receipts is not None else None)
        ctx.services[DISPATCHER] = service
        for protocol in transports:
            ctx.pushers.register(protocol, service)
        ctx.status.register(PushSource(service, lambda: ctx.services.get(CERTIFICATE_STATUS)))

    async def stop(ctx: ServerContext) -> None:
        service = ctx.services.pop(DISPATCHER)
        if service is None:
            return
        for protocol in service.transports:
            ctx.pushers.unregister(protocol)
        await service.close()

    async def run_dispatch(ctx: ServerContext) -> None:
        await dispatcher(ctx).run()

    async def run_recovery(ctx: ServerContext) -> None:
        await sweeps.run_recovery(dispatcher(ctx))

    async def run_sweep(ctx: ServerContext) -> None:
        await sweeps.run_sweep(dispatcher(ctx))

    def reload_settings(ctx: ServerContext) -> None:
        service = ctx.services.get(DISPATCHER)
        if service is not None:
            service.config = push_config(ctx.config)

    return Plugin(
        name="push",
        startup=(start, *extra_startup),
        shutdown=(stop,),
        workers=(
            Worker("push.dispatch", run_dispatch),
            Worker("push.recovery", run_recovery),
            Worker("push.sweep", run_sweep),
            *extra_workers,
        ),
        hot=(
            # Read from dispatcher.config at each use; the proxy is the transports' (a restart).
            hot(*(f"push.{key}" for key in (
                "retry_seconds", "retry_max_seconds", "silent_after_hours", "sweep_interval_seconds",
                "batch_size", "concurrency",
            )), apply=reload_settings),
            *extra_hot,
        ),
        reload=tuple(extra_reload),
    )


PLUGIN = make_plugin()
