"""EAS (DESIGN §8), wired into the server: the runner of the configured Exchange servers (only
when ``[eas] enabled``), the discovery worker (one replica at a time) and the "eas" light.
Commands and policies are ``plugin_commands``, which starts after this one and finds the runner
under ``keys_commands.RUNNER``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mdm.config import ConfigError
from mdm.db.leader_lock import leader_lock
from mdm.eas.config import EasConfig
from mdm.eas.keys import DISCOVERY, RUNNER_FACTORY, VIEWS
from mdm.eas.keys_commands import RUNNER
from mdm.eas.seams import CmdletRunner
from mdm.eas.service_views import EasViews
from mdm.eas.status import EasSource
from mdm.eas.worker_discovery import DISCOVERY_LOCK_FILE, DISCOVERY_LOCK_KEY, DiscoveryWorker
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger("mdm.eas")

RunnerFactory = Callable[[EasConfig, Path], CmdletRunner]


def exchange_runner(config: EasConfig, data_dir: Path) -> CmdletRunner:
    try:
        from mdm.eas.runner import ExchangeRunner
    except ImportError as exc:  # the optional "eas" extra is not installed
        raise ConfigError(
            f"[eas] enabled = true needs the EAS libraries ({exc.name or exc}): "
            "pip install 'mdm[eas]' (they build against MIT Kerberos: Debian's libkrb5-dev)"
        ) from None

    return ExchangeRunner(config, data_dir)


def current_runner(ctx: ServerContext) -> CmdletRunner | None:
    """The runner of this server (None while [eas] is off); read at use, so tests may swap it."""
    runner: CmdletRunner | None = ctx.services.get(RUNNER)
    return runner


async def start(ctx: ServerContext) -> None:
    def config() -> EasConfig:
        return ctx.config.section(EasConfig)

    settings = config()
    if settings.enabled:
        factory: RunnerFactory = ctx.services.get(RUNNER_FACTORY) or exchange_runner
        ctx.services[RUNNER] = factory(settings, ctx.config.data_path)
        log.info("eas: %s mode, %d server(s), scope %s", settings.mode, len(settings.servers), settings.scope)
    lock = leader_lock(ctx.db, ctx.config.data_path, key=DISCOVERY_LOCK_KEY, lock_file=DISCOVERY_LOCK_FILE)
    worker = DiscoveryWorker(ctx.db, lambda: current_runner(ctx), config, lock)
    ctx.services[DISCOVERY] = worker
    ctx.services[VIEWS] = EasViews(ctx.db)
    ctx.status.register(EasSource(config, lambda: current_runner(ctx)))


async def run(ctx: ServerContext) -> None:
    await ctx.services[DISCOVERY].run_forever()


async def stop(ctx: ServerContext) -> None:
    ctx.services.pop(VIEWS)
    worker = ctx.services.pop(DISCOVERY)
    if worker is not None:
        await worker.release()
    runner = ctx.services.pop(RUNNER)
    if runner is not None:
        await runner.close()


PLUGIN = Plugin(name="eas", startup=(start,), shutdown=(stop,), workers=(Worker("eas.discovery", run),))
