"""How the push dispatcher is put together, the same way in the server and in the push worker
process: transports from the factories composed in ``mdm.plugins``, receipts, the hand-over."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mdm.core.push import PushReceipts
from mdm.db.models import Protocol
from mdm.push.service_stats import service_name
from mdm.push.types import PushTransport
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.push")

TransportFactory = Callable[[ServerContext], Awaitable[PushTransport | None]]
# Who hears the accepted pushes per wake-up reason (the bulk operations), read from the context
# when the dispatcher is built (the service it names is started by an earlier plugin).
ReceiptsFactory = Callable[[ServerContext], PushReceipts | None]
# What the server hands its worker process beyond the configuration (JSON values: e.g. the APNs
# identity the server holds, which may differ from the files after a refused `mdm reload`), and
# how the worker takes it into its context before the transports are built.
Handoff = Callable[[ServerContext], Mapping[str, Any]]
Receive = Callable[[ServerContext, Mapping[str, Any]], None]


@dataclass(frozen=True)
class WorkerSetup:
    """The composition of the push worker process (``[push] worker = "process"``)."""

    factories: Mapping[Protocol, TransportFactory]
    # The receipts built in the worker, over its own database (the server's are services of the
    # server's context, which the worker does not have).
    receipts: ReceiptsFactory | None = None
    receive: Receive | None = None


async def build_transports(
    ctx: ServerContext, factories: Mapping[Protocol, TransportFactory]
) -> dict[Protocol, PushTransport]:
    """The transports that can be built: a factory answering None (not configured) or failing
    (a bad certificate or key must not stop the server) leaves its protocol without one."""
    transports: dict[Protocol, PushTransport] = {}
    for protocol, factory in factories.items():
        try:
            transport = await factory(ctx)
        except Exception as exc:
            log.error("push: the %s client cannot be started, %s devices are not pushed: %s",
                      service_name(protocol), protocol.name.lower(), exc)
            continue
        if transport is None:
            log.info("push: %s is not configured; %s devices are not pushed",
                     service_name(protocol), protocol.name.lower())
            continue
        transports[protocol] = transport
    return transports
