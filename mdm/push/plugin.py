"""The push ``Plugin``: builds the dispatcher at start-up over the transports that can be built
(APNs for iOS, FCM for Android), registers it as the ``Pusher`` of those protocols, and runs its
worker, the recovery pass and the daily sweep.

With ``[push] worker = "process"`` (and a ``WorkerCommand`` composed in), the server's dispatcher
only records owed wake-ups: the worker, the recovery pass and the sweep run in a process of their
own (``mdm.push.worker_process``), started and supervised by ``mdm.push.supervisor``. The
server's transports are then built (for the certificate's status and ``mdm reload``) but never
used: the APNs and FCM clients connect on their first push, so the server opens no connection.

Transports come from factories handed to ``make_plugin`` (composed in ``mdm.plugins``): a factory
answers None when its service is not configured (no push certificate, no service account), and
then no pusher is registered for that protocol: a queued command waits for the device's next
poll, as without push. A factory that fails is logged and treated the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from mdm.config_reload import HotKeys, hot
from mdm.db.models import Protocol
from mdm.push import sweeps
from mdm.push.assembly import ReceiptsFactory, TransportFactory, build_transports
from mdm.push.config import HOT_KEYS, push_config
from mdm.push.dispatcher import PushDispatcher
from mdm.push.keys import CERTIFICATE_STATUS, DISPATCHER
from mdm.push.status import PushSource
from mdm.push.supervisor import WorkerCommand, WorkerSupervisor
from mdm.server.context import ServerContext, ServiceKey
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.push")

__all__ = ["ReceiptsFactory", "TransportFactory", "dispatcher", "make_plugin"]

# Present when the dispatcher's worker runs in a process of its own.
SUPERVISOR = ServiceKey("push.supervisor", WorkerSupervisor)


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
    worker_command: WorkerCommand | None = None,
) -> Plugin:
    """The push plugin over these transports; ``extra_workers``/``extra_hot``: what the
    composition adds for them (the APNs certificate's expiry warnings and renewal);
    ``receipts``: the ``PushReceipts`` told after each batch how many pushes were accepted per
    reason (None, or a factory answering None: nobody is told); ``worker_command``: how to start
    the worker process of ``[push] worker = "process"`` (without it the worker runs inline)."""
    factories = dict(factories or {})

    async def start(ctx: ServerContext) -> None:
        transports = await build_transports(ctx, factories)
        in_process = push_config(ctx.config).worker == "process"
        if in_process and worker_command is None:
            log.error('push: push.worker = "process" but this build has no worker command; the '
                      "worker runs in the server")
            in_process = False
        service = PushDispatcher(ctx.db, push_config(ctx.config), transports,
                                 lease_seconds=push_config(ctx.config).lease_seconds,
                                 receipts=receipts(ctx) if receipts is not None and not in_process else None)
        ctx.services[DISPATCHER] = service
        if in_process and worker_command is not None:
            ctx.services[SUPERVISOR] = WorkerSupervisor(ctx, service, worker_command)
        for protocol in transports:
            ctx.pushers.register(protocol, service)
        ctx.status.register(PushSource(service, lambda: ctx.services.get(CERTIFICATE_STATUS)))

    async def stop(ctx: ServerContext) -> None:
        supervisor = ctx.services.pop(SUPERVISOR)
        if supervisor is not None:  # (the worker task stopped it already, unless it never ran)
            await supervisor.stop()
        service = ctx.services.pop(DISPATCHER)
        if service is None:
            return
        for protocol in service.transports:
            ctx.pushers.unregister(protocol)
        await service.close()

    # With a worker process, the server's workers are its supervisor (in place of the dispatch)
    # and nothing else: the recovery pass and the sweep run in the worker process.
    async def run_dispatch(ctx: ServerContext) -> None:
        supervisor = ctx.services.get(SUPERVISOR)
        if supervisor is not None:
            await supervisor.run()
        else:
            await dispatcher(ctx).run()

    async def run_recovery(ctx: ServerContext) -> None:
        if SUPERVISOR not in ctx.services:
            await sweeps.run_recovery(dispatcher(ctx))

    async def run_sweep(ctx: ServerContext) -> None:
        if SUPERVISOR not in ctx.services:
            await sweeps.run_sweep(dispatcher(ctx))

    async def restart_worker(ctx: ServerContext) -> None:
        """After the composition's reload hooks (a renewed APNs identity taken by the server's
        client): the worker process starts again with what changed."""
        supervisor = ctx.services.get(SUPERVISOR)
        if supervisor is not None:
            supervisor.restart_if_changed()

    def reload_settings(ctx: ServerContext) -> None:
        service = ctx.services.get(DISPATCHER)
        if service is not None:  # (the budget reads repush_per_second from it at each batch)
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
                *HOT_KEYS,
                "workers",  # (the supervisor starts that many worker processes: restart_worker)
            )), apply=reload_settings),
            *extra_hot,
        ),
        reload=(*extra_reload, restart_worker),
    )


PLUGIN = make_plugin()
