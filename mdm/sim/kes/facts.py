"""Facts of a simulated Android device, generated to look like a real handset: a 16-hex-digit
Android id, a maker's model and a matching Android release, a Luhn-valid IMEI, an FCM
registration token, and a few installed applications."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

from mdm.sim.facts import _luhn_digit

# (manufacturer, model, marketing name, type allocation code)
MODELS = [
    ("Google", "Pixel 8", "Pixel 8", "35846912"),
    ("samsung", "SM-S911B", "Galaxy S23", "35072542"),
    ("samsung", "SM-A546B", "Galaxy A54 5G", "35290617"),
    ("Xiaomi", "2201117TG", "Redmi Note 11", "86751806"),
]
# (release, SDK level, security patch)
RELEASES = [("14", 34, "2024-06-05"), ("13", 33, "2024-03-01"), ("12", 31, "2023-11-01")]
BASE_APPS = [
    ("com.android.chrome", "Chrome", "126.0.6478.71"),
    ("com.google.android.gm", "Gmail", "2024.06.02"),
    ("com.kaspersky.kes", "Kaspersky Endpoint Security", "11.110.4.1234"),
]
AGENT_VERSION = "11.110.4.1234"


@dataclass
class App:
    package: str
    name: str
    version: str
    sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"package": self.package, "name": self.name, "version": self.version}
        if self.sha256:
            out["sha256"] = self.sha256
        return out


@dataclass
class AndroidFacts:
    android_id: str
    manufacturer: str
    model: str
    marketing_name: str
    os_version: str
    sdk: int
    security_patch: str
    serial_number: str
    imei: str
    fcm_token: str
    device_name: str
    battery_level: float = 0.8
    storage_total_mb: int = 122_880
    storage_free_mb: int = 61_440
    apps: list[App] = field(default_factory=list)

    @classmethod
    def generate(cls, rng: random.Random | None = None) -> AndroidFacts:
        r = rng or random.Random()  # noqa: S311 - simulation data
        maker, model, name, tac = r.choice(MODELS)
        release, sdk, patch = r.choice(RELEASES)
        body = tac + "".join(r.choice(string.digits) for _ in range(6))
        token_chars = string.ascii_letters + string.digits + "-_"
        return cls(
            android_id="".join(r.choice("0123456789abcdef") for _ in range(16)),
            manufacturer=maker, model=model, marketing_name=name, os_version=release, sdk=sdk,
            security_patch=patch,
            serial_number="".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(11)),
            imei=body + _luhn_digit(body),
            fcm_token="".join(r.choice(token_chars) for _ in range(22)) + ":APA91b"
            + "".join(r.choice(token_chars) for _ in range(134)),
            device_name=f"{name} ({r.randrange(100, 999)})",
            battery_level=round(r.uniform(0.2, 1.0), 2),
            apps=[App(p, n, v) for p, n, v in BASE_APPS],
        )

    def device_info(self) -> dict[str, Any]:
        """What ``register`` and an inventory report say about the hardware and system."""
        return {
            "android_id": self.android_id, "manufacturer": self.manufacturer, "model": self.model,
            "name": self.device_name, "os_version": self.os_version, "sdk": self.sdk,
            "security_patch": self.security_patch, "serial_number": self.serial_number, "imei": self.imei,
        }
