"""Wi-Fi (``com.apple.wifi.managed``), personal (WEP/WPA*) or enterprise (EAP)."""

from __future__ import annotations

import uuid as uuidlib
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mdm.ios.profiles.base import Nested, NonEmpty, PayloadBase, PayloadRef, field

# EAP-TLS, LEAP, EAP-SIM, TTLS, EAP-AKA, PEAP, EAP-FAST
EAPType = Literal[13, 17, 18, 21, 23, 25, 43]
TLSVersion = Literal["1.0", "1.1", "1.2", "1.3"]
InnerAuth = Literal["PAP", "EAP", "CHAP", "MSCHAP", "MSCHAPv2"]


class EAPClientConfiguration(Nested):
    accept_eap_types: list[EAPType] = field("AcceptEAPTypes", ..., min_length=1)
    username: str | None = field("UserName")
    password: str | None = field("UserPassword")
    one_time_password: bool | None = field("OneTimeUserPassword")
    outer_identity: str | None = field("OuterIdentity")
    # Certificate payloads (in the same profile) trusted to sign the RADIUS server certificate.
    trusted_certificate_uuids: list[PayloadRef] | None = field("PayloadCertificateAnchorUUID")
    trusted_server_names: list[NonEmpty] | None = field("TLSTrustedServerNames")
    allow_trust_exceptions: bool | None = field("TLSAllowTrustExceptions")
    ttls_inner_authentication: InnerAuth | None = field("TTLSInnerAuthentication")
    tls_minimum_version: TLSVersion | None = field("TLSMinimumVersion")
    tls_maximum_version: TLSVersion | None = field("TLSMaximumVersion")


class WiFi(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.wifi.managed"
    type: Literal["wifi"] = "wifi"

    ssid: str = field("SSID_STR", ..., min_length=1, max_length=32)
    hidden_network: bool | None = field("HIDDEN_NETWORK")
    auto_join: bool | None = field("AutoJoin")
    encryption_type: Literal["WEP", "WPA", "WPA2", "WPA3", "Any", "None"] = Field(
        default="Any", serialization_alias="EncryptionType"
    )
    password: str | None = field("Password", max_length=255)
    eap: EAPClientConfiguration | None = field("EAPClientConfiguration")
    # Identity certificate payload (PKCS#12 or SCEP in the same profile) for EAP-TLS.
    certificate_uuid: PayloadRef | None = field("PayloadCertificateUUID")
    proxy_type: Literal["None", "Manual", "Auto"] | None = field("ProxyType")
    proxy_server: str | None = field("ProxyServer")
    proxy_port: int | None = field("ProxyServerPort", ge=0, le=65535)
    proxy_username: str | None = field("ProxyUsername")
    proxy_password: str | None = field("ProxyPassword")
    proxy_pac_url: str | None = field("ProxyPACURL")
    captive_bypass: bool | None = field("CaptiveBypass")
    disable_mac_randomization: bool | None = field("DisableAssociationMACRandomization")

    @field_validator("ssid")
    @classmethod
    def _ssid_bytes(cls, value: str) -> str:
        if len(value.encode()) > 32:
            raise ValueError("an SSID is at most 32 bytes (UTF-8)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WiFi:
        if self.encryption_type == "None" and (self.password or self.eap):
            raise ValueError("an open network (encryption_type None) takes no password or EAP settings")
        if self.proxy_type == "Manual" and not (self.proxy_server and self.proxy_port is not None):
            raise ValueError("proxy_type Manual needs proxy_server and proxy_port")
        if self.proxy_type == "Auto" and self.proxy_server:
            raise ValueError("proxy_type Auto uses proxy_pac_url (or WPAD), not proxy_server")
        if self.eap and 13 in self.eap.accept_eap_types and self.certificate_uuid is None:
            raise ValueError("EAP-TLS (13) needs certificate_uuid: the identity payload in this profile")
        return self

    def references(self) -> list[uuidlib.UUID]:
        refs = [self.certificate_uuid] if self.certificate_uuid else []
        if self.eap and self.eap.trusted_certificate_uuids:
            refs += self.eap.trusted_certificate_uuids
        return refs
