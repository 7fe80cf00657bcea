"""Typed keys of the EAS command executor and policy service (set by ``mdm.eas.plugin``; read by
the admin API's handlers)."""

from __future__ import annotations

from typing import Any

from mdm.eas.pusher import EasPusher
from mdm.eas.service_commands import CommandExecutor
from mdm.eas.service_policies import PolicyService
from mdm.server.context import ServiceKey

EXECUTOR = ServiceKey("eas.executor", CommandExecutor)
POLICIES = ServiceKey("eas.policies", PolicyService)
PUSHER = ServiceKey("eas.pusher", EasPusher)
# The ``CmdletRunner`` of the configured Exchange servers, set by ``mdm.eas.plugin`` when [eas] is
# enabled (absent: EAS commands stay queued, policy changes answer 503).
RUNNER: ServiceKey[Any] = ServiceKey("eas.runner")
