"""What a feature hands the runtime: one ``Plugin`` value per feature, composed in ``mdm.plugins``.

Nothing registers itself on import; the runtime receives the list of plugins and calls, in order:
each plugin's ``startup`` hooks (build services into ``ctx.services`` under typed keys), its route
installers for every listener it serves, then its ``workers``; at stop its ``shutdown`` hooks.
``hot`` declares the configuration keys the feature takes at run time (``mdm reload``);
``reload`` hooks run at every ``mdm reload``, changed keys or not (files re-read in place, like the
server certificates: a renewed push certificate written over the old one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from mdm.config_reload import HotKeys
from mdm.server.context import ServerContext

LISTENERS = ("ios", "kes", "web", "admin")

RouteInstaller = Callable[[web.Application, ServerContext], None]
Hook = Callable[[ServerContext], Awaitable[None]]
WorkerRun = Callable[[ServerContext], Awaitable[None]]


@dataclass(frozen=True)
class Worker:
    name: str
    run: WorkerRun


@dataclass(frozen=True)
class Plugin:
    name: str
    # listener name -> installer of that feature's routes on the listener's application
    routes: Mapping[str, RouteInstaller] = field(default_factory=dict)
    startup: Sequence[Hook] = ()
    shutdown: Sequence[Hook] = ()
    workers: Sequence[Worker] = ()
    hot: Sequence[HotKeys] = ()
    reload: Sequence[Hook] = ()

    def __post_init__(self) -> None:
        unknown = set(self.routes) - set(LISTENERS)
        if unknown:
            raise ValueError(f"{self.name}: unknown listener(s) {sorted(unknown)}; known: {LISTENERS}")
