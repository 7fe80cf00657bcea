"""VPN (``com.apple.vpn.managed``): IKEv2, the built-in VPN client every iOS device has."""

from __future__ import annotations

import uuid as uuidlib
from typing import ClassVar, Literal

from pydantic import model_validator

from mdm.ios.profiles.base import IntFlag, Nested, NonEmpty, PayloadBase, PayloadRef, field

Encryption = Literal["DES", "3DES", "AES-128", "AES-256", "AES-128-GCM", "AES-256-GCM", "ChaCha20Poly1305"]
Integrity = Literal["SHA1-96", "SHA1-160", "SHA2-256", "SHA2-384", "SHA2-512"]
DHGroup = Literal[1, 2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 31, 32]


class SecurityAssociation(Nested):
    encryption_algorithm: Encryption | None = field("EncryptionAlgorithm")
    integrity_algorithm: Integrity | None = field("IntegrityAlgorithm")
    diffie_hellman_group: DHGroup | None = field("DiffieHellmanGroup")
    lifetime_minutes: int | None = field("LifeTimeInMinutes", ge=10, le=1440)


class OnDemandRule(Nested):
    action: Literal["Allow", "Connect", "Disconnect", "EvaluateConnection", "Ignore"] = field("Action", ...)
    interface_type: Literal["Ethernet", "WiFi", "Cellular"] | None = field("InterfaceTypeMatch")
    ssids: list[NonEmpty] | None = field("SSIDMatch")
    dns_domains: list[NonEmpty] | None = field("DNSDomainMatch")
    dns_servers: list[NonEmpty] | None = field("DNSServerAddressMatch")
    url_probe: str | None = field("URLStringProbe")


class IKEv2Settings(Nested):
    remote_address: NonEmpty = field("RemoteAddress", ...)
    local_identifier: NonEmpty = field("LocalIdentifier", ...)
    remote_identifier: NonEmpty = field("RemoteIdentifier", ...)
    authentication_method: Literal["None", "SharedSecret", "Certificate"] = field("AuthenticationMethod", ...)
    shared_secret: str | None = field("SharedSecret")
    certificate_uuid: PayloadRef | None = field("PayloadCertificateUUID")
    certificate_type: Literal["RSA", "ECDSA256", "ECDSA384", "ECDSA521"] | None = field("CertificateType")
    server_certificate_issuer_common_name: str | None = field("ServerCertificateIssuerCommonName")
    server_certificate_common_name: str | None = field("ServerCertificateCommonName")
    # EAP (username/password) on top of the IKE authentication.
    extended_auth_enabled: IntFlag | None = field("ExtendedAuthEnabled")
    auth_name: str | None = field("AuthName")
    auth_password: str | None = field("AuthPassword")
    dead_peer_detection_rate: Literal["None", "Low", "Medium", "High"] | None = field("DeadPeerDetectionRate")
    enable_pfs: IntFlag | None = field("EnablePFS")
    disable_mobike: IntFlag | None = field("DisableMOBIKE")
    disable_redirect: IntFlag | None = field("DisableRedirect")
    enable_certificate_revocation_check: IntFlag | None = field("EnableCertificateRevocationCheck")
    nat_keepalive_interval: int | None = field("NATKeepAliveInterval", ge=20)
    mtu: int | None = field("MTU", ge=1280, le=1400)
    ike_sa: SecurityAssociation | None = field("IKESecurityAssociationParameters")
    child_sa: SecurityAssociation | None = field("ChildSecurityAssociationParameters")
    on_demand_enabled: IntFlag | None = field("OnDemandEnabled")
    on_demand_rules: list[OnDemandRule] | None = field("OnDemandRules")
    disconnect_on_idle: IntFlag | None = field("DisconnectOnIdle")
    disconnect_on_idle_timer: int | None = field("DisconnectOnIdleTimer", ge=0)

    @model_validator(mode="after")
    def _authentication(self) -> IKEv2Settings:
        if self.authentication_method == "SharedSecret" and not self.shared_secret:
            raise ValueError("authentication_method SharedSecret needs shared_secret")
        if self.authentication_method == "Certificate" and self.certificate_uuid is None:
            raise ValueError("authentication_method Certificate needs certificate_uuid (an identity payload)")
        if self.authentication_method != "SharedSecret" and self.shared_secret:
            raise ValueError("shared_secret is only used with authentication_method SharedSecret")
        if self.on_demand_rules and not self.on_demand_enabled:
            raise ValueError("on_demand_rules need on_demand_enabled: true")
        return self


class VPN(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.vpn.managed"
    type: Literal["vpn"] = "vpn"

    name: NonEmpty = field("UserDefinedName", ...)
    vpn_type: Literal["IKEv2"] = field("VPNType", "IKEv2")
    ikev2: IKEv2Settings = field("IKEv2", ...)

    def references(self) -> list[uuidlib.UUID]:
        return [self.ikev2.certificate_uuid] if self.ikev2.certificate_uuid else []
