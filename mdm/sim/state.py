"""What a simulated iOS device holds: its apps, installed profiles, rights and switches."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.sim.facts import HardwareFacts

# AccessRights bits (com.apple.mdm payload).
R_PROFILE_INSPECT, R_PROFILE_INSTALL, R_LOCK, R_ERASE = 1, 2, 4, 8
R_DEVICE_INFO, R_NETWORK_INFO, R_PROV_INSPECT, R_PROV_INSTALL = 16, 32, 64, 128
R_APPS_INSPECT, R_RESTRICTIONS, R_SECURITY, R_SETTINGS, R_APP_MGMT = 256, 512, 1024, 2048, 4096
ALL_RIGHTS = 8191


@dataclass
class App:
    identifier: str
    name: str
    short_version: str
    version: str
    bundle_size: int
    managed: bool = False
    management_flags: int = 0
    external_version: int = 0
    configuration: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None

    def listing(self) -> dict[str, Any]:
        return {
            "AdHocCodeSigned": False,
            "AppStoreVendable": True,
            "BetaApp": False,
            "BundleSize": self.bundle_size,
            "DeviceBasedVPP": False,
            "DynamicSize": self.bundle_size // 40,
            "ExternalVersionIdentifier": self.external_version,
            "HasUpdateAvailable": False,
            "Identifier": self.identifier,
            "Installing": False,
            "IsAppClip": False,
            "IsValidated": True,
            "Name": self.name,
            "ShortVersion": self.short_version,
            "Version": self.version,
        }


# Apps a user typically has installed before enrolling (not managed).
PREINSTALLED = [
    App(
        "com.microsoft.Office.Outlook",
        "Outlook",
        "4.2422.0",
        "4.2422.0",
        301_015_040,
        external_version=865_312_779,
    ),
    App(
        "com.tinyspeck.chatlyio", "Slack", "24.05.10", "24.05.10.0", 212_000_768, external_version=865_701_330
    ),
    App("us.zoom.videomeetings", "Zoom", "6.0.11", "6.0.11.22939", 160_071_680, external_version=866_101_201),
    App("com.google.Maps", "Google Maps", "6.118.1", "6.118.1.0", 347_504_640, external_version=865_900_112),
]


@dataclass
class InstalledProfile:
    plist: dict[str, Any]
    managed: bool
    signer: x509.Certificate | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)

    @property
    def identifier(self) -> str:
        return str(self.plist["PayloadIdentifier"])

    def listing(self) -> dict[str, Any]:
        p = self.plist
        out: dict[str, Any] = {
            "HasRemovalPasscode": False,
            "IsEncrypted": False,
            "IsManaged": self.managed,
            "PayloadContent": [
                {
                    k: v
                    for k, v in item.items()
                    if k
                    in (
                        "PayloadDescription",
                        "PayloadDisplayName",
                        "PayloadIdentifier",
                        "PayloadType",
                        "PayloadUUID",
                        "PayloadVersion",
                        "PayloadOrganization",
                    )
                }
                for item in p.get("PayloadContent", [])
            ],
            "PayloadIdentifier": p["PayloadIdentifier"],
            "PayloadRemovalDisallowed": bool(p.get("PayloadRemovalDisallowed", False)),
            "PayloadUUID": p["PayloadUUID"],
            "PayloadVersion": p.get("PayloadVersion", 1),
        }
        for key in ("PayloadDescription", "PayloadDisplayName", "PayloadOrganization"):
            if key in p:
                out[key] = p[key]
        if self.signer is not None:
            out["SignerCertificates"] = [self.signer.public_bytes(serialization.Encoding.DER)]
        return out


@dataclass
class DeviceState:
    facts: HardwareFacts
    access_rights: int = ALL_RIGHTS
    supervised: bool = False
    lost_mode: bool = False
    passcode_present: bool = True
    busy: bool = False  # NotNow while set
    busy_polls: int = 0  # NotNow during the next K poll sessions
    wiped: bool = False
    unenrolled: bool = False
    data_roaming: bool = False
    voice_roaming: bool = True
    personal_hotspot: bool = False
    bluetooth: bool = True
    time_zone: str = "Europe/Berlin"
    unlock_token: bytes = field(default_factory=lambda: secrets.token_bytes(180))
    identity: x509.Certificate | None = None
    enrollment: InstalledProfile | None = None
    mdm_identifier: str = ""
    # A re-installed enrollment profile (new identity), applied by the device after the session.
    replacement_enrollment: bytes | None = None
    trusted_roots: list[x509.Certificate] = field(default_factory=list)
    profiles: dict[str, InstalledProfile] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=lambda: {a.identifier: App(**vars(a)) for a in PREINSTALLED})
    provisioning: dict[str, dict[str, Any]] = field(default_factory=dict)
    awaiting_redemption: dict[str, int] = field(default_factory=dict)
    location: tuple[float, float] = (52.520008, 13.404954)
    # (RequestType, CommandUUID, Status) of every answer, for tests and the CLI summary.
    history: list[tuple[str, str, str]] = field(default_factory=list)

    def has(self, right: int) -> bool:
        return bool(self.access_rights & right)


# One command's answer: the device state and the ``Command`` dictionary in, the extra result keys out.
Handler = Callable[[DeviceState, dict[str, Any]], dict[str, Any]]
