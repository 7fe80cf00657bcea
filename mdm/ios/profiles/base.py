"""The pieces every payload builder shares: common ``Payload*`` keys, stable UUIDs, typed data
fields (base64 in JSON, ``bytes`` in Python), and plist serialisation.

Builders are pydantic models: the same class validates an admin's JSON (``InstallConfProf``
arguments) and builds the plist dict. Each field carries the Apple key as its
``serialization_alias``; ``content()`` dumps the payload-specific keys by alias.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import plistlib
import uuid as uuidlib
from datetime import datetime
from typing import Annotated, Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from mdm.pki.x509_errors import CERTIFICATE_ERRORS

# Namespace of the stable payload UUIDs (uuid5 over identifier + content digest).
UUID_NAMESPACE = uuidlib.UUID("6f1d0a8e-2b7c-5c1e-9a53-4d0e2f6b8c11")

COMMON_FIELDS = frozenset({"type", "identifier", "uuid", "display_name", "description", "organization"})


def _data(value: Any) -> bytes:
    """bytes as given (Python callers) or strict base64 (JSON callers)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64") from None
    raise ValueError("must be base64 text")


def _certificate_der(value: Any) -> bytes:
    """An X.509 certificate as PEM text, base64 DER text, or bytes (PEM or DER) -> DER."""
    raw = value.encode() if isinstance(value, str) and "-----BEGIN" in value else value
    if isinstance(raw, str):
        raw = _data(raw)
    if not isinstance(raw, bytes | bytearray):
        raise ValueError("must be a PEM certificate or base64 DER")
    try:
        if bytes(raw).lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(bytes(raw))
        else:
            cert = x509.load_der_x509_certificate(bytes(raw))
    except CERTIFICATE_ERRORS:
        raise ValueError("is not an X.509 certificate (PEM or DER)") from None
    return cert.public_bytes(serialization.Encoding.DER)


def _upper_uuid(value: uuidlib.UUID) -> str:
    return str(value).upper()


def field(apple_key: str, default: Any = None, **constraints: Any) -> Any:
    """A field dumped under its Apple key; ``default=...`` makes it required."""
    return Field(default=default, serialization_alias=apple_key, **constraints)


# Base64 in JSON, bytes in Python; dumped as bytes (a plist <data>).
Data = Annotated[bytes, BeforeValidator(_data)]
CertificateDER = Annotated[bytes, BeforeValidator(_certificate_der)]
# A PayloadUUID as Apple writes it (upper case).
PayloadRef = Annotated[uuidlib.UUID, PlainSerializer(_upper_uuid)]
# Apple's integer-valued flags (VPN dictionaries): true/false in, 1/0 out.
IntFlag = Annotated[bool, PlainSerializer(int)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=1024)]


class Nested(BaseModel):
    """A dictionary inside a payload (EAP settings, IKEv2 settings...)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def content(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class PayloadBase(BaseModel):
    """One entry of a profile's ``PayloadContent``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    payload_type: ClassVar[str]

    identifier: str | None = Field(default=None, min_length=1, max_length=255)
    uuid: PayloadRef | None = None
    display_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    organization: str | None = Field(default=None, max_length=255)

    def content(self) -> dict[str, Any]:
        """The payload-specific keys (without the common ``Payload*`` keys)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude=set(COMMON_FIELDS))

    def references(self) -> list[uuidlib.UUID]:
        """UUIDs of certificate payloads this payload points at (must be in the same profile)."""
        return []

    def to_dict(self, default_identifier: str) -> dict[str, Any]:
        identifier = self.identifier or default_identifier
        body = self.content()
        out: dict[str, Any] = {
            "PayloadType": self.payload_type,
            "PayloadVersion": 1,
            "PayloadIdentifier": identifier,
            "PayloadUUID": _upper_uuid(self.uuid or stable_uuid(identifier, self.payload_type, body)),
        }
        for key, value in (
            ("PayloadDisplayName", self.display_name),
            ("PayloadDescription", self.description),
            ("PayloadOrganization", self.organization),
        ):
            if value is not None:
                out[key] = value
        out.update(body)
        return out


def stable_uuid(identifier: str, kind: str, body: Any) -> uuidlib.UUID:
    """Same identifier and content -> same UUID, so that re-sending an unchanged profile to many
    devices builds (and signs) identical bytes; any change of content gives a new UUID."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_canonical)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return uuidlib.uuid5(UUID_NAMESPACE, f"{kind}\n{identifier}\n{digest}")


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"data": base64.b64encode(value).decode()}
    if isinstance(value, datetime):
        return {"date": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not a plist value")


def serialise(profile: dict[str, Any]) -> bytes:
    """XML plist, keys sorted: deterministic bytes for deterministic dicts."""
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
