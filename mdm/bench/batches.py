"""Rows signed in worker processes a few batches ahead of the database writes (the fleet and KES
preparations): bounded, so never the whole fleet in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any


async def signed_batches(
    executor: Executor | None, sign: Callable[[int, int], list[Any]], have: int, devices: int,
    size: int, ahead: int,
) -> AsyncIterator[list[Any]]:
    """``sign(start, stop)`` for each batch of ``size`` in ``[have, devices)``, in order, with at most
    ``ahead + 1`` batches signing at once (inline when there is no executor). ``sign`` must be a
    module-level function (it is pickled to the worker processes)."""
    loop = asyncio.get_running_loop()
    starts = iter(range(have, devices, size))
    pending: list[asyncio.Future[list[Any]]] = []

    def submit() -> None:
        start = next(starts, None)
        if start is None:
            return
        stop = min(devices, start + size)
        if executor is None:
            future: asyncio.Future[list[Any]] = loop.create_future()
            future.set_result(sign(start, stop))
        else:
            future = asyncio.wrap_future(executor.submit(sign, start, stop))
        pending.append(future)

    for _ in range(max(1, ahead) + 1):
        submit()
    while pending:
        signed = await pending.pop(0)
        submit()
        yield signed
