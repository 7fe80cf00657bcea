"""Typed keys of the EAS discovery services (set by ``mdm.eas.plugin``; read by the admin API's
handlers). The runner's key is ``keys_commands.RUNNER`` (one runner for discovery and commands)."""

from __future__ import annotations

from typing import Any

from mdm.eas.service_views import EasViews
from mdm.eas.worker_discovery import DiscoveryWorker
from mdm.server.context import ServiceKey

DISCOVERY = ServiceKey("eas.discovery", DiscoveryWorker)
VIEWS = ServiceKey("eas.views", EasViews)
# Callable[[EasConfig, Path], CmdletRunner]: builds the runner when [eas] is enabled (tests and the
# bench put another one here before start-up; default: mdm.eas.runner.ExchangeRunner).
RUNNER_FACTORY: ServiceKey[Any] = ServiceKey("eas.runner_factory")
