"""Typed keys of the EAS command executor and policy service (set by ``mdm.eas.plugin``; read by
the admin API's handlers)."""

from __future__ import annotations

from mdm.eas.pusher import EasPusher
from mdm.eas.service_commands import CommandExecutor
from mdm.eas.service_policies import PolicyService
from mdm.server.context import ServiceKey

EXECUTOR = ServiceKey("eas.executor", CommandExecutor)
POLICIES = ServiceKey("eas.policies", PolicyService)
PUSHER = ServiceKey("eas.pusher", EasPusher)
