"""What a simulated agent holds: its device's state as commands leave it (locked, wiped, the
installed applications, the last location...), its local settings and the policy it applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mdm.sim.kes.facts import AndroidFacts


@dataclass
class Location:
    latitude: float
    longitude: float
    accuracy_m: float
    time: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"latitude": self.latitude, "longitude": self.longitude, "accuracy_m": self.accuracy_m,
                "at": self.time.isoformat()}


@dataclass
class AgentState:
    facts: AndroidFacts
    locked: bool = False
    lock_message: str = ""
    password_resets: int = 0
    alarms: int = 0
    location: Location | None = None
    wiped: str = ""  # "", "full" or "corporate"
    unenrolled: bool = False
    # Settings the user made on the device; the policy's unlocked values yield to them.
    local_settings: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] | None = None  # the last policy document received
    applied_policy_version: str = ""
    settings_in_force: dict[str, Any] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)  # the APK URLs fetched
    mugshots: int = 0

    @property
    def gone(self) -> bool:
        """Wiped or unenrolled: the agent no longer talks to the server."""
        return bool(self.wiped) or self.unenrolled

    def apply_policy(self, document: dict[str, Any]) -> None:
        """Apply a policy document (``{"version", "settings": {name: {"value", "locked"}}}``):
        its unlocked values, overwritten by the local settings, overwritten by its locked values."""
        settings = document.get("settings") or {}
        merged = {k: v.get("value") for k, v in settings.items() if not v.get("locked")}
        merged.update(self.local_settings)
        merged.update({k: v.get("value") for k, v in settings.items() if v.get("locked")})
        self.policy = document
        self.settings_in_force = merged
        self.applied_policy_version = str(document.get("version", ""))

    def status(self) -> dict[str, Any]:
        f = self.facts
        return {"battery_level": round(f.battery_level * 100), "charging": False, "locked": self.locked,
                "storage_free_mb": f.storage_free_mb, "storage_total_mb": f.storage_total_mb}
