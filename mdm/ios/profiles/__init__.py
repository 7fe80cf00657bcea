"""Typed builders of configuration profiles and their payloads (validated against Apple's schema
in the tests and, through ``mdm.ios.commands``, whenever a profile is sent)."""

from mdm.ios.profiles.accounts import ExchangeActiveSync, MailAccount, MailServer
from mdm.ios.profiles.base import PayloadBase, serialise
from mdm.ios.profiles.certificates import PKCS12Identity, RootCertificate, SCEPIdentity, SubjectAltName
from mdm.ios.profiles.passcode import PasscodePolicy
from mdm.ios.profiles.profile import Payload, Profile
from mdm.ios.profiles.restrictions import Restrictions
from mdm.ios.profiles.vpn import VPN, IKEv2Settings, OnDemandRule, SecurityAssociation
from mdm.ios.profiles.wifi import EAPClientConfiguration, WiFi

__all__ = [
    "VPN",
    "EAPClientConfiguration",
    "ExchangeActiveSync",
    "IKEv2Settings",
    "MailAccount",
    "MailServer",
    "OnDemandRule",
    "PKCS12Identity",
    "PasscodePolicy",
    "Payload",
    "PayloadBase",
    "Profile",
    "Restrictions",
    "RootCertificate",
    "SCEPIdentity",
    "SecurityAssociation",
    "SubjectAltName",
    "WiFi",
    "serialise",
]
