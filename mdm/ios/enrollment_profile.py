"""The iOS enrollment profile: root CA, device identity (PKCS#12 or SCEP) and ``com.apple.mdm``.

Pure construction: no database, no I/O. The caller issues the identity (or a SCEP challenge),
then builds, serialises and signs (``mdm.ios.signing``). Payload keys follow Apple's schema
(apple/device-management ``mdm/profiles``: TopLevel, com.apple.mdm, com.apple.security.root,
com.apple.security.pkcs12, com.apple.security.scep).
"""

from __future__ import annotations

import plistlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mdm.pki.keys import PrivateKey

PER_USER_CONNECTIONS = "com.apple.mdm.per-user-connections"
Payload = dict[str, Any]


def new_uuid() -> str:
    return str(uuid.uuid4()).upper()


@dataclass(frozen=True)
class Pkcs12Identity:
    """A device identity delivered with its key, encrypted with ``password`` (which the payload
    carries next to it: that is how iOS profiles install identities without user input)."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    password: str
    encryption: Literal["legacy", "aes"] = "legacy"
    friendly_name: str = "MDM identity"


@dataclass(frozen=True)
class ScepIdentity:
    """The device generates its key and enrolls at ``url`` with the one-time ``challenge``."""

    url: str
    challenge: str
    subject: tuple[tuple[str, str], ...]
    key_size: int = 2048
    name: str = ""  # CA instance name, if the SCEP server hosts several


@dataclass(frozen=True)
class EnrollmentProfileSpec:
    identifier: str  # top-level PayloadIdentifier; RemoveProfile names the profile by it
    profile_uuid: str
    organization: str
    server_url: str
    checkin_url: str
    topic: str
    identity: Pkcs12Identity | ScepIdentity
    root_certificates: Sequence[x509.Certificate]
    access_rights: int = 8191
    sign_message: bool = True
    check_out_when_removed: bool = True
    per_user_connections: bool = False
    display_name: str = ""


def pkcs12_bytes(identity: Pkcs12Identity) -> bytes:
    """DER PKCS#12 with the key, the certificate and its chain.

    "legacy" is PBE-SHA1-3DES with a SHA-1 MAC, which every iOS version imports; Apple's
    Security framework long refused PBES2/AES-256 containers (the OpenSSL 3 default) with a
    "wrong password" error. The password is random and travels in the same profile, so the
    container's cipher adds no protection here: compatibility decides. "aes" is available for
    fleets known to accept it.
    """
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
    if identity.encryption == "aes":
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
    else:
        # SHA-1 MAC: part of the compatible legacy format, not a security boundary here (see above).
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(
            hashes.SHA1()  # noqa: S303
        )
    return pkcs12.serialize_key_and_certificates(
        identity.friendly_name.encode(),
        identity.key,
        identity.certificate,
        list(identity.chain) or None,
        builder.build(identity.password.encode()),
    )


def _common(payload_type: str, identifier: str, display_name: str, organization: str) -> Payload:
    return {
        "PayloadType": payload_type,
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": new_uuid(),
        "PayloadDisplayName": display_name,
        "PayloadOrganization": organization,
    }


def root_payload(cert: x509.Certificate, identifier: str, organization: str) -> Payload:
    payload = _common("com.apple.security.root", identifier, "Root certificate authority", organization)
    payload["PayloadCertificateFileName"] = "root.cer"
    payload["PayloadContent"] = cert.public_bytes(serialization.Encoding.DER)
    return payload


def pkcs12_payload(identity: Pkcs12Identity, identifier: str, organization: str) -> Payload:
    payload = _common("com.apple.security.pkcs12", identifier, "Device identity", organization)
    payload["PayloadCertificateFileName"] = "identity.p12"
    payload["PayloadContent"] = pkcs12_bytes(identity)
    payload["Password"] = identity.password
    return payload


def scep_payload(identity: ScepIdentity, identifier: str, organization: str) -> Payload:
    content: Payload = {
        "URL": identity.url,
        "Challenge": identity.challenge,
        # X.500 name as an array of RDNs, each an array of [OID, value] pairs.
        "Subject": [[[oid, value]] for oid, value in identity.subject],
        "Keysize": identity.key_size,
        "Key Type": "RSA",
        "Key Usage": 5,  # signing and encryption
    }
    if identity.name:
        content["Name"] = identity.name
    payload = _common("com.apple.security.scep", identifier, "Device identity (SCEP)", organization)
    payload["PayloadContent"] = content
    return payload


def mdm_payload(spec: EnrollmentProfileSpec, identity_uuid: str, identifier: str) -> Payload:
    payload = _common("com.apple.mdm", identifier, "Mobile device management", spec.organization)
    payload.update(
        {
            "ServerURL": spec.server_url,
            "CheckInURL": spec.checkin_url,
            "Topic": spec.topic,
            "IdentityCertificateUUID": identity_uuid,
            "AccessRights": spec.access_rights,
            "SignMessage": spec.sign_message,
            "CheckOutWhenRemoved": spec.check_out_when_removed,
        }
    )
    if spec.per_user_connections:
        payload["ServerCapabilities"] = [PER_USER_CONNECTIONS]
    return payload


def build(spec: EnrollmentProfileSpec) -> Payload:
    """The profile as a dictionary (data values as ``bytes``)."""
    content: list[Payload] = [
        root_payload(cert, f"{spec.identifier}.root{i or ''}", spec.organization)
        for i, cert in enumerate(spec.root_certificates)
    ]
    if isinstance(spec.identity, Pkcs12Identity):
        identity = pkcs12_payload(spec.identity, f"{spec.identifier}.identity", spec.organization)
    else:
        identity = scep_payload(spec.identity, f"{spec.identifier}.scep", spec.organization)
    content.append(identity)
    content.append(mdm_payload(spec, identity["PayloadUUID"], f"{spec.identifier}.mdm"))
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": spec.identifier,
        "PayloadUUID": spec.profile_uuid,
        "PayloadDisplayName": spec.display_name or f"{spec.organization} device management",
        "PayloadDescription": f"Enrolls this device in {spec.organization} mobile device management.",
        "PayloadOrganization": spec.organization,
        "PayloadContent": content,
    }


def serialize(profile: Payload) -> bytes:
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def build_bytes(spec: EnrollmentProfileSpec) -> bytes:
    """Build and serialise (CPU-bound for PKCS#12: run through ``asyncio.to_thread``)."""
    return serialize(build(spec))
