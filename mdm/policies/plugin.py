"""Policies: the resolver the platforms read (``seams.POLICIES``), the services of the admin API
(``keys``), and the worker that keeps the resolver's caches fresh (every ``REFRESH_SECONDS`` it
reads the one-row revision counters; a change on any replica is seen within a second)."""

from __future__ import annotations

import asyncio
import logging

from mdm.policies.keys import DEVICES, SERVICE
from mdm.policies.resolver import REFRESH_SECONDS, CachedResolver
from mdm.policies.seams import POLICIES
from mdm.policies.service import PolicyService
from mdm.policies.service_devices import DeviceService, DeviceWaker
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.policies")


async def start(ctx: ServerContext) -> None:
    resolver = CachedResolver()
    async with ctx.db.session() as session:
        await resolver.refresh(session)
    ctx.services[POLICIES] = resolver
    ctx.services[SERVICE] = PolicyService(ctx.db, resolver, DeviceWaker(ctx.db, ctx.pushers))
    ctx.services[DEVICES] = DeviceService(ctx.db, resolver, ctx.pushers)


async def stop(ctx: ServerContext) -> None:
    service = ctx.services.get(SERVICE)
    if service is not None:
        await service.waker.close()


async def keep_fresh(ctx: ServerContext) -> None:
    resolver = ctx.services[SERVICE].resolver
    failing = False
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            async with ctx.db.session() as session:
                await resolver.refresh(session)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is away: keep serving the cached policies
            if not failing:
                log.warning("policies: cannot read the revision (%s); serving the cached policies", exc)
            failing = True


PLUGIN = Plugin(
    name="policies",
    startup=(start,),
    shutdown=(stop,),
    workers=(Worker("policies.refresh", keep_fresh),),
)
