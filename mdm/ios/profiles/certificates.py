"""Certificates: a trusted root (``com.apple.security.root``), an identity as PKCS#12
(``com.apple.security.pkcs12``) or enrolled by the device over SCEP (``com.apple.security.scep``).

Other payloads point at these by ``PayloadUUID``: give such a payload an explicit ``uuid``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from cryptography.hazmat.primitives.serialization import pkcs12
from pydantic import Field, field_validator, model_validator

from mdm.ios.profiles.base import CertificateDER, Data, Nested, NonEmpty, PayloadBase, field


class RootCertificate(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.security.root"
    type: Literal["root_certificate"] = "root_certificate"

    # PEM or base64 DER in JSON; stored as DER.
    certificate: CertificateDER = field("PayloadContent", ...)
    filename: str | None = field("PayloadCertificateFileName", max_length=255)


class PKCS12Identity(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.security.pkcs12"
    type: Literal["pkcs12"] = "pkcs12"

    pkcs12: Data = field("PayloadContent", ...)
    # Without a password the device asks the user for it during installation.
    password: str | None = field("Password")
    filename: str | None = field("PayloadCertificateFileName", max_length=255)

    @model_validator(mode="after")
    def _opens(self) -> PKCS12Identity:
        if self.password is None:
            return self
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(self.pkcs12, self.password.encode())
        except ValueError:
            raise ValueError("pkcs12 cannot be opened with this password (or is not PKCS#12)") from None
        if key is None or cert is None:
            raise ValueError("pkcs12 must hold a private key and its certificate")
        return self


class SubjectAltName(Nested):
    rfc822_name: str | None = field("rfc822Name")
    dns_name: str | None = field("dNSName")
    uri: str | None = field("uniformResourceIdentifier")
    nt_principal_name: str | None = field("ntPrincipalName")


class SCEPIdentity(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.security.scep"
    type: Literal["scep"] = "scep"

    url: str = Field(min_length=8, max_length=2048)
    name: str | None = Field(default=None, description="CA instance name (SCEP 'message' parameter)")
    # Relative distinguished names in order, e.g. [["O", "Example"], ["CN", "alice"]].
    subject: list[tuple[NonEmpty, str]] | None = None
    challenge: str | None = None
    key_size: Literal[1024, 2048, 4096] = 2048
    key_type: Literal["RSA"] = "RSA"
    # 1 signing, 4 encryption, 5 both (0: no restriction).
    key_usage: Literal[0, 1, 4, 5] | None = None
    # SHA-256 (or SHA-1) of the CA certificate, hex.
    ca_fingerprint: str | None = Field(default=None, pattern=r"^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay: int | None = Field(default=None, ge=0, le=3600)
    subject_alt_name: SubjectAltName | None = None
    key_is_extractable: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        return value

    def content(self) -> dict[str, Any]:
        inner: dict[str, Any] = {
            "URL": self.url,
            "Keysize": self.key_size,
            "Key Type": self.key_type,
        }
        optional: dict[str, Any] = {
            "Name": self.name,
            "Challenge": self.challenge,
            "Key Usage": self.key_usage,
            "Retries": self.retries,
            "RetryDelay": self.retry_delay,
            "KeyIsExtractable": self.key_is_extractable,
        }
        if self.subject:
            optional["Subject"] = [[[oid, value]] for oid, value in self.subject]
        if self.ca_fingerprint:
            optional["CAFingerprint"] = bytes.fromhex(self.ca_fingerprint)
        if self.subject_alt_name:
            optional["SubjectAltName"] = self.subject_alt_name.content()
        inner.update({k: v for k, v in optional.items() if v is not None})
        return {"PayloadContent": inner}
