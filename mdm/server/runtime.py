"""``mdm serve``: migrate, open every enabled listener with its own TLS context, run background
workers, and stop gracefully on SIGTERM/SIGINT. SIGHUP (``mdm reload``) re-reads ``mdm.toml``,
applies the keys features declared hot (``mdm.config_reload``), re-reads server certificates, and
writes the outcome to ``run/reload.json``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mdm import __version__
from mdm.config import Config
from mdm.config_reload import HotKeys, hot
from mdm.core.events import EventType, emit
from mdm.db import migrate
from mdm.db.engine import Database
from mdm.logs import reconfigure_logging
from mdm.server.context import CTX, ServerContext
from mdm.server.event_types import LISTENER_FAILED, SERVICE_STARTED, SERVICE_STOPPED
from mdm.server.middleware import ACCESS_LOG_KEY, IN_FLIGHT_KEY, LISTENER_KEY, InFlight, request_context
from mdm.server.plugin import Plugin, Worker
from mdm.server.reloader import Reloader
from mdm.server.runfiles import PID_FILE as PID_FILE  # re-exported
from mdm.server.runfiles import remove_state
from mdm.server.runfiles import running_pid as running_pid  # re-exported: the CLI signals the server

log = logging.getLogger("mdm.server")


def _apply_logging(ctx: ServerContext) -> None:
    reconfigure_logging(ctx.config.logging.json_lines, ctx.config.logging.level)


# What the runtime can change while running (mdm reload). Listeners, the database, TLS settings,
# limits.max_body_bytes and logging.access_log are built into the applications at start: restart.
RUNTIME_HOT = (
    hot("logging.level", "logging.json", apply=_apply_logging),
    hot("limits.shutdown_grace_seconds"),  # read when stopping
    hot("client"),  # only the CLI reads [client]
)


class StartupError(Exception):
    """A problem that prevents start-up; the message is one line an administrator can act on."""


@dataclass(frozen=True)
class Binding:
    listener: str
    port: int
    bind: str
    tls: bool
    config_key: str
    env_var: str


def bindings(config: Config) -> list[Binding]:
    ls = config.listeners
    out: list[Binding] = []
    for name, env in (("ios", "MDM_IOS_PORT"), ("kes", "MDM_KES_PORT"), ("admin", "MDM_ADMIN_PORT")):
        lc = getattr(ls, name)
        if lc.enabled:
            out.append(Binding(name, lc.port, lc.bind, lc.mode == "tls", f"listeners.{name}.port", env))
    if ls.web.enabled:
        if ls.web.http_enabled:
            out.append(
                Binding(
                    "web",
                    ls.web.http_port,
                    ls.web.bind,
                    False,
                    "listeners.web.http_port",
                    "MDM_WEB_HTTP_PORT",
                )
            )
        if ls.web.https_enabled:
            out.append(
                Binding(
                    "web",
                    ls.web.https_port,
                    ls.web.bind,
                    True,
                    "listeners.web.https_port",
                    "MDM_WEB_HTTPS_PORT",
                )
            )
    ports: dict[int, Binding] = {}
    for b in out:
        if b.port == 0:  # ephemeral (tests)
            continue
        if b.port in ports:
            other = ports[b.port]
            raise StartupError(
                f"port {b.port} is configured twice ({other.config_key} and {b.config_key}); "
                "give each listener its own port"
            )
        ports[b.port] = b
    return out


def bind_error(b: Binding, exc: OSError) -> StartupError:
    where = f"{b.config_key} / {b.env_var}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"port {b.port} ({b.listener} listener) is already in use ({where}): "
            "stop the other process or choose another port"
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"port {b.port} ({b.listener} listener) needs privileges to bind ({where}): run as root, grant "
            "CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the python binary), "
            "or choose a port >= 1024"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"cannot bind {b.bind}:{b.port} ({b.listener} listener): address not on this host "
            f"(listeners.{b.listener}.bind)"
        )
    return StartupError(f"cannot listen on {b.bind}:{b.port} ({where}): {exc.strerror or exc}")


def build_app(ctx: ServerContext, listener: str, plugins: Sequence[Plugin]) -> web.Application:
    app = web.Application(
        middlewares=[request_context],
        client_max_size=ctx.config.limits.max_body_bytes,
        handler_args={"access_log": None},
    )
    app[CTX] = ctx
    app[ACCESS_LOG_KEY] = ctx.config.logging.access_log
    app[LISTENER_KEY] = listener
    for plugin in plugins:
        install = plugin.routes.get(listener)
        if install is not None:
            install(app, ctx)
    return app


async def open_context(config: Config) -> ServerContext:
    """Database reachable and migrated (the plugins' start-up hooks load the rest: the CA first)."""
    db = Database(config.database_url, config.database.pool_size, config.database.echo)
    try:
        await db.check()
        applied = await migrate.upgrade(db)
    except BaseException:
        await db.close()
        raise
    if applied:
        log.info("database migrated: applied %s", ", ".join(applied))
    db.start_checkpointer()
    return ServerContext(config=config, db=db)


class Server:
    def __init__(
        self,
        ctx: ServerContext,
        plugins: Sequence[Plugin],
        load_config: Callable[[], Config] | None = None,
        overrides: Sequence[str] = (),
    ) -> None:
        """``plugins`` are the features to run, in start-up order; ``load_config`` reads the
        configuration again for a reload (without it, a reload only re-reads certificates);
        ``overrides`` are keys the command line set."""
        self.ctx = ctx
        self.plugins = tuple(plugins)
        declared: list[HotKeys] = [*RUNTIME_HOT, *(h for p in self.plugins for h in p.hot)]
        on_reload = [hook for p in self.plugins for hook in p.reload]
        self.reloader = Reloader(ctx, load_config, self.reload, overrides, declared, on_reload)
        self._reloads: set[asyncio.Task[object]] = set()
        self.runners: list[web.AppRunner] = []
        self.sites: list[web.BaseSite] = []
        self.worker_tasks: list[asyncio.Task[None]] = []
        self.bound: list[tuple[Binding, int]] = []  # (binding, actual port)
        self.in_flight = InFlight()
        self._stop = asyncio.Event()
        self._started_at: float | None = None  # monotonic; set once service_started is written

    async def start(self) -> None:
        ctx = self.ctx
        apps: dict[str, web.AppRunner] = {}
        try:
            # Inside the try: a refused start-up (an unusable certificate slot) shuts down the
            # plugins already started and closes the database, as a stop does.
            for plugin in self.plugins:
                for hook in plugin.startup:
                    await hook(ctx)
            for b in bindings(ctx.config):
                ssl_ctx = None
                if b.tls:
                    if b.listener not in ctx.tls:  # a plugin (the PKI) builds every listener's context
                        raise StartupError(f"no TLS certificate is set up for the {b.listener} listener")
                    ssl_ctx = ctx.tls[b.listener].front
                runner = apps.get(b.listener)
                if runner is None:
                    app = build_app(ctx, b.listener, self.plugins)
                    app[IN_FLIGHT_KEY] = self.in_flight
                    runner = web.AppRunner(
                        app,
                        access_log=None,
                        shutdown_timeout=ctx.config.limits.shutdown_grace_seconds,
                        handle_signals=False,
                    )
                    await runner.setup()
                    apps[b.listener] = runner
                    self.runners.append(runner)
                site = web.TCPSite(
                    runner, b.bind, b.port, ssl_context=ssl_ctx, backlog=1024, reuse_address=True
                )
                try:
                    await site.start()
                except OSError as exc:
                    error = bind_error(b, exc)
                    await self._record(
                        LISTENER_FAILED, listener=b.listener, bind=b.bind, port=b.port,
                        config_key=b.config_key, error=str(error),
                    )
                    raise error from None
                self.sites.append(site)
                port = _actual_port(site) or b.port
                self.bound.append((b, port))
                ctx.bound_ports[f"{b.listener}:{'https' if b.tls else 'http'}"] = port
                log.info(
                    "listening: %s on %s://%s:%d",
                    b.listener,
                    "https" if b.tls else "http",
                    b.bind,
                    port,
                    extra={"listener": b.listener, "port": port, "tls": b.tls},
                )
        except BaseException:
            await self.stop()
            raise
        for w in (w for p in self.plugins for w in p.workers):
            self.worker_tasks.append(asyncio.create_task(_run_worker(w, ctx), name=f"worker:{w.name}"))
        self._started_at = time.monotonic()
        await self._record(
            SERVICE_STARTED, version=__version__, pid=os.getpid(), listeners=dict(ctx.bound_ports)
        )

    async def _record(self, type: EventType, **body: Any) -> None:
        """A service event in a transaction of its own; a database failing here is logged, never
        fatal (the start-up error or the shutdown it reports goes on)."""
        try:
            async with self.ctx.db.transaction() as session:
                emit(session, type, **body)
        except Exception as exc:
            log.error("could not record the %s event: %s", type.name, exc)

    def reload(self) -> list[str]:
        """Re-read server certificates; a bad file keeps the old context and is reported."""
        problems = []
        for name, reloadable in self.ctx.tls.items():
            try:
                reloadable.reload()
                log.info("reloaded TLS certificate for %s", name)
            except Exception as exc:
                problems.append(f"{name}: {exc}")
                log.error("TLS reload failed for %s, keeping the old certificate: %s", name, exc)
        return problems

    def request_reload(self) -> None:
        """SIGHUP: configuration and certificates, in a task (a signal handler cannot await)."""
        task: asyncio.Task[object] = asyncio.ensure_future(self.reloader.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        log.info("shutting down: no new connections, finishing in-flight requests")
        for site in self.sites:
            with contextlib.suppress(Exception):
                await site.stop()
        # Finish in-flight requests (including bodies still arriving) before connections close.
        unfinished = 0
        if not await self.in_flight.wait_idle(self.ctx.config.limits.shutdown_grace_seconds):
            unfinished = self.in_flight.count
            log.warning("%d request(s) still in flight after the grace period; closing", unfinished)
        for runner in self.runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        for task in [*self.worker_tasks, *self._reloads]:
            task.cancel()
        for task in self.worker_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for plugin in reversed(self.plugins):
            for hook in plugin.shutdown:
                with contextlib.suppress(Exception):
                    await hook(self.ctx)
        if self._started_at is not None:
            uptime, self._started_at = round(time.monotonic() - self._started_at, 3), None
            await self._record(
                SERVICE_STOPPED, version=__version__, pid=os.getpid(), uptime_seconds=uptime,
                unfinished_requests=unfinished,
            )
        await self.ctx.db.close()
        self.sites.clear()
        self.runners.clear()
        log.info("stopped")


def _actual_port(site: web.BaseSite) -> int | None:
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return sockets[0].getsockname()[1] if sockets else None


async def _run_worker(w: Worker, ctx: ServerContext) -> None:
    backoff = 1.0
    while True:
        try:
            await w.run(ctx)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker %s failed; restarting in %.0fs", w.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60)


# Young collections every 100,000 net allocations instead of 700: at a thousand requests a second
# the default promotes whatever is in flight at each collection to the old generations, where it
# dies and is found only by full collections (each one a pause of the whole loop).
GC_THRESHOLDS = (100_000, 20, 10)


def settle_gc() -> None:
    """What start-up built (modules, the schema, compiled statements, TLS contexts) lives as long
    as the process: moved out of the collector's reach, and young collections made rare
    (``GC_THRESHOLDS``), so that a full collection under load scans only what the work made. The
    server (77-143 ms pauses at 1,000 KES connections before), the push worker process (12-30 µs
    of its ~80-95 µs per wake-up went to the collector) and the benches' measured phases
    (``mdm.bench.collector``) settle it alike."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(
    config: Config,
    plugins: Sequence[Plugin],
    load_config: Callable[[], Config] | None = None,
    overrides: Sequence[str] = (),
) -> None:
    ctx = await open_context(config)
    server = Server(ctx, plugins, load_config, overrides)
    await server.start()
    settle_gc()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    pid_file = config.data_path / PID_FILE
    pid_file.write_text(f"{os.getpid()}\n")
    server.reloader.write_state()
    try:
        await server.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await server.stop()
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        remove_state(config.data_path)
