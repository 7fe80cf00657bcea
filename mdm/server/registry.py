"""Seams where feature packages plug in, without the runtime knowing them by name.

- ``route_installer(listener)``: add routes (and sub-apps) to a listener's application.
- ``startup_hook``: build a service at start-up (e.g. the APNs client) into ``ctx.services``.
- ``worker``: a long-running background coroutine (outbox delivery, re-push, renewal).

Feature packages register in their ``plugin.py``; ``mdm.plugins`` imports all of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from mdm.server.context import ServerContext

LISTENERS = ("ios", "kes", "web", "admin")

RouteInstaller = Callable[[web.Application, ServerContext], None]
StartupHook = Callable[[ServerContext], Awaitable[None]]
WorkerFactory = Callable[[ServerContext], Awaitable[None]]


@dataclass(frozen=True)
class Worker:
    name: str
    run: WorkerFactory


_ROUTES: dict[str, list[RouteInstaller]] = {name: [] for name in LISTENERS}
_STARTUP: list[StartupHook] = []
_SHUTDOWN: list[StartupHook] = []
_WORKERS: list[Worker] = []


def route_installer(listener: str) -> Callable[[RouteInstaller], RouteInstaller]:
    if listener not in _ROUTES:
        raise ValueError(f"unknown listener {listener!r}; known: {', '.join(LISTENERS)}")

    def decorate(fn: RouteInstaller) -> RouteInstaller:
        _ROUTES[listener].append(fn)
        return fn

    return decorate


def startup_hook(fn: StartupHook) -> StartupHook:
    _STARTUP.append(fn)
    return fn


def shutdown_hook(fn: StartupHook) -> StartupHook:
    _SHUTDOWN.append(fn)
    return fn


def worker(name: str) -> Callable[[WorkerFactory], WorkerFactory]:
    def decorate(fn: WorkerFactory) -> WorkerFactory:
        _WORKERS.append(Worker(name, fn))
        return fn

    return decorate


def installers(listener: str) -> list[RouteInstaller]:
    return list(_ROUTES[listener])


def startup_hooks() -> list[StartupHook]:
    return list(_STARTUP)


def shutdown_hooks() -> list[StartupHook]:
    return list(_SHUTDOWN)


def workers() -> list[Worker]:
    return list(_WORKERS)
