"""A configuration profile (top level ``PayloadType`` ``Configuration``) made of typed payloads."""

from __future__ import annotations

import uuid as uuidlib
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mdm.ios.profiles.accounts import ExchangeActiveSync, MailAccount
from mdm.ios.profiles.base import PayloadRef, serialise, stable_uuid
from mdm.ios.profiles.certificates import PKCS12Identity, RootCertificate, SCEPIdentity
from mdm.ios.profiles.passcode import PasscodePolicy
from mdm.ios.profiles.restrictions import Restrictions
from mdm.ios.profiles.vpn import VPN
from mdm.ios.profiles.wifi import WiFi

Payload = Annotated[
    PasscodePolicy | Restrictions | WiFi | VPN | ExchangeActiveSync | MailAccount
    | RootCertificate | PKCS12Identity | SCEPIdentity,
    Field(discriminator="type"),
]

# Payloads other payloads may reference by PayloadUUID.
CERTIFICATE_PAYLOADS = (RootCertificate, PKCS12Identity, SCEPIdentity)

Identifier = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Profile(BaseModel):
    """``Profile(identifier=..., display_name=..., payloads=[WiFi(...), ...]).to_bytes()``."""

    model_config = ConfigDict(extra="forbid")

    identifier: Identifier
    display_name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4096)
    organization: str | None = Field(default=None, max_length=255)
    uuid: PayloadRef | None = None
    removal_disallowed: bool = False
    scope: Literal["System", "User"] | None = None
    payloads: list[Payload] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _coherent(self) -> Profile:
        identifiers = Counter(self._identifiers())
        dupes = sorted(i for i, n in identifiers.items() if n > 1)
        if dupes:
            raise ValueError(f"payload identifiers must be unique: {', '.join(dupes)}")
        explicit = [p.uuid for p in self.payloads if p.uuid is not None]
        if len(explicit) != len(set(explicit)):
            raise ValueError("payload uuids must be unique")
        certificates = {p.uuid for p in self.payloads if isinstance(p, CERTIFICATE_PAYLOADS) and p.uuid}
        for index, payload in enumerate(self.payloads):
            for ref in payload.references():
                if ref not in certificates:
                    raise ValueError(
                        f"payloads[{index}] ({payload.type}) refers to certificate {str(ref).upper()}, "
                        "which is not the uuid of a root_certificate/pkcs12/scep payload of this profile"
                    )
        return self

    def _identifiers(self) -> list[str]:
        return [
            p.identifier or f"{self.identifier}.{p.type}.{i + 1}" for i, p in enumerate(self.payloads)
        ]

    def to_dict(self) -> dict[str, Any]:
        content = [p.to_dict(ident) for p, ident in zip(self.payloads, self._identifiers(), strict=True)]
        out: dict[str, Any] = {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": self.identifier,
            "PayloadDisplayName": self.display_name,
            "PayloadRemovalDisallowed": self.removal_disallowed,
            "PayloadContent": content,
        }
        for key, value in (
            ("PayloadDescription", self.description),
            ("PayloadOrganization", self.organization),
            ("PayloadScope", self.scope),
        ):
            if value is not None:
                out[key] = value
        uuid: uuidlib.UUID = self.uuid or stable_uuid(self.identifier, "Configuration", out)
        out["PayloadUUID"] = str(uuid).upper()
        return out

    def to_bytes(self) -> bytes:
        """The ``.mobileconfig`` (XML plist), unsigned."""
        return serialise(self.to_dict())
