"""Admin API models of the PKI routes (also their OpenAPI schemas)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from mdm.api.schemas import PageQuery, Strict, Timestamp
from mdm.pki.crl import REASONS
from mdm.pki.rules import IssuanceRule
from mdm.pki.tables import CertStatus, IssuedCertificateRecord

CertTypeName = Literal["mobile", "mail", "vpn"]
AnyCertType = Literal["mobile", "mail", "vpn", "server"]
StatusName = Literal["valid", "revoked", "expired", "superseded"]
ReasonName = Literal[
    "unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
    "cessation_of_operation", "privilege_withdrawn", "aa_compromise",
]
assert set(StatusName.__args__) == {s.value for s in CertStatus}  # type: ignore[attr-defined]
assert set(ReasonName.__args__) == set(REASONS)  # type: ignore[attr-defined]


class CertificateListQuery(PageQuery):
    user: str | None = Field(default=None, max_length=255, description="owner user name")
    status: StatusName | None = None
    type: AnyCertType | None = None
    device: int | None = Field(default=None, ge=1, le=2**62, description="device id")


class CertificateOut(BaseModel):
    serial: str = Field(description="lower-case hexadecimal")
    type: str
    status: str
    subject: str
    user: str | None
    user_id: int | None
    device_id: int | None
    source: str
    not_before: Timestamp
    not_after: Timestamp
    issued_at: Timestamp
    revoked_at: Timestamp | None
    revocation_reason: str | None
    renews_serial: str | None

    @classmethod
    def of(cls, r: IssuedCertificateRecord, user: str | None) -> CertificateOut:
        return cls(
            serial=r.serial, type=r.type, status=r.status, subject=r.subject, user=user, user_id=r.user_id,
            device_id=r.device_id, source=r.source, not_before=r.not_before, not_after=r.not_after,
            issued_at=r.issued_at, revoked_at=r.revoked_at, revocation_reason=r.revocation_reason,
            renews_serial=r.renews_serial,
        )


class CertificateDetail(CertificateOut):
    pem: str

    @classmethod
    def detail(cls, r: IssuedCertificateRecord, user: str | None) -> CertificateDetail:
        return cls(**CertificateOut.of(r, user).model_dump(), pem=r.pem)


class CertificatePage(BaseModel):
    items: list[CertificateOut]
    next_cursor: str | None


class IssueIn(Strict):
    user: str = Field(min_length=1, max_length=255, description="user name (owner of the certificate)")
    type: CertTypeName
    csr: str | None = Field(
        default=None, max_length=65536,
        description="PKCS#10 request (PEM); without it the server generates the key pair per the rule",
    )
    p12_password: Annotated[str, Field(min_length=1, max_length=1024)] | SkipJsonSchema[None] = Field(
        default=None,
        description="protects the returned PKCS#12 when the server generates the key; omitted: a random "
        "password is generated and returned once in the response",
    )
    legacy_p12: bool = Field(
        default=False, description="3DES/SHA-1 PKCS#12 for old clients (default AES-256)"
    )
    create_user: bool = Field(default=False, description="create the user if it does not exist")
    email: str | None = Field(default=None, max_length=320, pattern=r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+$")


class IssueOut(BaseModel):
    certificate: CertificateOut
    certificate_pem: str
    chain_pem: str = Field(description="issuing CA up to the root")
    pkcs12: str | None = Field(description="base64 PKCS#12 with key, certificate and chain (generated keys)")
    p12_password: str | None = Field(description="the generated PKCS#12 password, when none was given")
    user_created: bool


class RevokeIn(Strict):
    reason: ReasonName = Field(default="unspecified", description="RFC 5280 reason")


class RuleOut(BaseModel):
    type: str
    validity_days: int
    key_type: str
    key_size: int
    renewal_days: int
    source: str
    template: str | None

    @classmethod
    def of(cls, rule: IssuanceRule) -> RuleOut:
        return cls(**rule.as_dict())


class RuleChangeOut(RuleOut):
    """A rule change while enterprise sources are in use."""

    trusted_sources: list[str] = Field(
        description="the enterprise sources whose CA certificates this server now trusts for device "
        "authentication (other replicas after `mdm reload`)",
    )


class RuleList(BaseModel):
    items: list[RuleOut]


class RuleIn(Strict):
    """Fields to change; the others keep their value."""

    # Optional but not nullable (null is refused, and the schema does not offer it); a field left
    # out keeps its value.
    validity_days: Annotated[int, Field(ge=1, le=3650)] | SkipJsonSchema[None] = None
    key_type: Literal["rsa", "ec"] | SkipJsonSchema[None] = None
    key_size: Annotated[int, Field(ge=256, le=8192)] | SkipJsonSchema[None] = None
    renewal_days: Annotated[int, Field(ge=0, le=3649)] | SkipJsonSchema[None] = None
    source: Annotated[str, Field(min_length=1, max_length=32)] | SkipJsonSchema[None] = None
    template: str | None = Field(default=None, max_length=255, description="empty string or null clears it")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(k for k, v in data.items() if v is None and k != "template")
            if nulls:
                raise ValueError(f"{', '.join(nulls)}: null is not a value; leave the field out instead")
        return data
