"""Typed keys of the EAS discovery services (set by ``mdm.eas.plugin``; read by the admin API's
handlers). The runner's key is ``keys_commands.RUNNER`` (one runner for discovery and commands)."""

from __future__ import annotations

from typing import Any

from mdm.server.context import ServiceKey

# mdm.eas.worker_discovery.DiscoveryWorker (Any: the worker module imports the service layers).
DISCOVERY: ServiceKey[Any] = ServiceKey("eas.discovery")
# Callable[[EasConfig, Path], CmdletRunner]: builds the runner when [eas] is enabled (tests and the
# bench put another one here before start-up; default: mdm.eas.runner.ExchangeRunner).
RUNNER_FACTORY: ServiceKey[Any] = ServiceKey("eas.runner_factory")
