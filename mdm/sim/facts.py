"""Hardware and software facts of a simulated device, generated so that they look like a real
iPhone/iPad: modern UDID format, randomised 10-character serial, Luhn-valid IMEI with an Apple
type-allocation code, matching OS version and build."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

# (ProductName, ModelName, Model, ModelNumber, marketing name, chip id for the UDID, cellular)
MODELS: list[tuple[str, str, str, str, str, str, bool]] = [
    ("iPhone16,1", "iPhone", "MTU93LL/A", "MTU93", "iPhone 15 Pro", "00008130", True),
    ("iPhone15,4", "iPhone", "MTLW3LL/A", "MTLW3", "iPhone 15", "00008120", True),
    ("iPhone15,2", "iPhone", "MQ0M3LL/A", "MQ0M3", "iPhone 14 Pro", "00008120", True),
    ("iPhone14,7", "iPhone", "MPU93LL/A", "MPU93", "iPhone 14", "00008110", True),
    ("iPad14,3", "iPad", "MNXD3LL/A", "MNXD3", "iPad Pro 11-inch (4th generation)", "00008112", False),
]

# (OSVersion, BuildVersion): real iOS releases.
OS_RELEASES = [("17.5.1", "21F90"), ("17.4.1", "21E236"), ("17.3.1", "21D61"), ("16.7.8", "20H343")]

# Type allocation codes used by Apple handsets (first 8 IMEI digits).
APPLE_TACS = ["35328208", "35391811", "35467123", "35669311", "35197614"]

SERIAL_ALPHABET = "BCDFGHJKLMNPQRTVWXY0123456789"
CARRIERS = [("T-Mobile", "310", "260"), ("Verizon", "311", "480"), ("AT&T", "310", "410")]


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _mac(rng: random.Random) -> str:
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFC) | 0x00  # globally administered, unicast
    return ":".join(f"{o:02x}" for o in octets)


@dataclass
class HardwareFacts:
    udid: str
    serial_number: str
    product_name: str
    model_name: str
    model: str
    model_number: str
    marketing_name: str
    os_version: str
    build_version: str
    device_name: str
    cellular: bool
    imei: str = ""
    meid: str = ""
    iccid: str = ""
    phone_number: str = ""
    carrier: str = ""
    mcc: str = ""
    mnc: str = ""
    modem_firmware: str = ""
    wifi_mac: str = ""
    bluetooth_mac: str = ""
    capacity_gb: float = 119.1
    available_gb: float = 71.4
    battery_level: float = 0.87
    device_id: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    eas_identifier: str = ""

    @classmethod
    def generate(
        cls, rng: random.Random | None = None, *, os_version: str | None = None, owner: str = ""
    ) -> HardwareFacts:
        rng = rng or random.Random()  # noqa: S311 - simulation data, not secrets
        product, model_name, model, model_number, marketing, chip, cellular = rng.choice(MODELS)
        release = next((r for r in OS_RELEASES if r[0] == os_version), None) or (
            (os_version, "21F90") if os_version else OS_RELEASES[0]
        )
        udid = f"{chip}-{rng.getrandbits(64):016X}"
        serial = "".join(rng.choice(SERIAL_ALPHABET) for _ in range(10))
        facts = cls(
            udid=udid,
            serial_number=serial,
            product_name=product,
            model_name=model_name,
            model=model,
            model_number=model_number,
            marketing_name=marketing,
            os_version=release[0],
            build_version=release[1],
            device_name=f"{owner}'s {model_name}" if owner else model_name,
            cellular=cellular,
            wifi_mac=_mac(rng),
            bluetooth_mac=_mac(rng),
            capacity_gb=rng.choice([119.1, 238.4, 476.9]),
            battery_level=round(rng.uniform(0.2, 1.0), 2),
            eas_identifier="".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(20)),
        )
        facts.available_gb = round(facts.capacity_gb * rng.uniform(0.3, 0.8), 1)
        if cellular:
            body = rng.choice(APPLE_TACS) + f"{rng.randrange(10**6):06d}"
            imei = body + _luhn_digit(body)
            facts.imei = f"{imei[:2]} {imei[2:8]} {imei[8:14]} {imei[14]}"
            facts.meid = imei[:14]
            carrier, mcc, mnc = rng.choice(CARRIERS)
            facts.carrier, facts.mcc, facts.mnc = carrier, mcc, mnc
            iccid_body = "8901" + f"{rng.randrange(10**14):014d}"
            facts.iccid = " ".join(
                (iccid_body + _luhn_digit(iccid_body))[i : i + 4] for i in range(0, 19, 4)
            ).strip()
            facts.phone_number = f"+1 (555) {rng.randrange(200, 999)}-{rng.randrange(10000):04d}"
            facts.modem_firmware = "1.60.03"
        return facts

    def checkin_identity(self) -> dict[str, Any]:
        """The device keys an Authenticate message carries."""
        out: dict[str, Any] = {
            "BuildVersion": self.build_version,
            "DeviceName": self.device_name,
            "Model": self.model,
            "ModelName": self.model_name,
            "OSVersion": self.os_version,
            "ProductName": self.product_name,
            "SerialNumber": self.serial_number,
            "UDID": self.udid,
        }
        if self.cellular:
            out["IMEI"] = self.imei
            out["MEID"] = self.meid
        return out
