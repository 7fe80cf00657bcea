"""What a platform that delivers policies (KES) uses: the effective policy of one device, and
where it records the version the device applied.

The effective policy is computed per device from its group's chain of policies and the active
policy profiles (``PolicyResolver.effective``), cached, and identified by ``version``: a stable
hash of its content, so a device is sent the document only when the version changes. What the
device finally applies (``apply_local``) is: the policy's unlocked values, overwritten by the
device's local settings, overwritten by the policy's locked values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.server.context import ServiceKey


@dataclass(frozen=True, slots=True)
class PolicySetting:
    value: Any  # JSON
    locked: bool


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """``version`` is "" when no policy applies to the device (``settings`` empty)."""

    version: str
    settings: Mapping[str, PolicySetting] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """What the sync answer carries (``docs/kes-protocol.md``, ``policy``)."""
        return {
            "version": self.version,
            "settings": {k: {"value": s.value, "locked": s.locked} for k, s in sorted(self.settings.items())},
        }


def apply_local(policy: EffectivePolicy, local: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in force on a device with ``local`` settings under ``policy``."""
    merged = {k: s.value for k, s in policy.settings.items() if not s.locked}
    merged.update(local)
    merged.update({k: s.value for k, s in policy.settings.items() if s.locked})
    return merged


class PolicyResolver(Protocol):
    async def effective(self, session: AsyncSession, device_id: int, group_id: int | None) -> EffectivePolicy:
        """The device's effective policy (cached; recomputed when a policy, a profile, the
        device's tags or an activation condition's outcome changes)."""
        ...

    async def record_applied(self, session: AsyncSession, device_id: int, version: str) -> None:
        """The device reports it applied ``version`` (shown as applied beside the desired one)."""
        ...


# Set by the policies plugin at start-up (before the platforms'); absent: no policies delivered.
POLICIES = ServiceKey("policies.resolver", PolicyResolver)
