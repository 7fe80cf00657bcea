"""Signed configuration profiles as a device sees them: unwrap the CMS SignedData (content attached),
verify the signature and the signer's chain to a trusted root, and read the payloads (enrollment:
identity as PKCS#12 or SCEP, root CA, ``com.apple.mdm``).

asn1crypto parses the CMS structure and cryptography checks the signatures; the CMS signature
check itself (message digest attribute, signed attributes re-encoded as a SET) is the few lines
no library exposes for attached SignedData.
"""

from __future__ import annotations

import hashlib
import plistlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from mdm.pki.x509_errors import CERTIFICATE_ERRORS
from mdm.sim.identity import Identity

MDM_PAYLOAD = "com.apple.mdm"
PKCS12_PAYLOAD = "com.apple.security.pkcs12"
SCEP_PAYLOAD = "com.apple.security.scep"
ROOT_PAYLOAD = "com.apple.security.root"
CERT_PAYLOADS = {ROOT_PAYLOAD, "com.apple.security.pkcs1", "com.apple.security.pem"}

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class ProfileError(Exception):
    """The profile is malformed, tampered with, or signed by an untrusted certificate.

    ``domain``/``code`` follow Apple's error catalogue (MCProfileErrorDomain 1000 malformed,
    1004 bad signature) so that the simulator can report them in an ErrorChain.
    """

    def __init__(self, message: str, *, code: int = 1000, domain: str = "MCProfileErrorDomain") -> None:
        super().__init__(message)
        self.code = code
        self.domain = domain


@dataclass(frozen=True)
class SignedContent:
    content: bytes
    signer: x509.Certificate | None  # None when the data was not CMS at all (unsigned profile)
    certificates: list[x509.Certificate] = field(default_factory=list)
    trusted: bool = False  # signer chains to one of the given roots


@dataclass(frozen=True)
class MdmPayload:
    server_url: str
    check_in_url: str
    topic: str
    identity_uuid: str
    sign_message: bool
    access_rights: int
    check_out_when_removed: bool
    identifier: str
    server_capabilities: list[str]


@dataclass(frozen=True)
class EnrollmentProfile:
    plist: dict[str, Any]
    signed: SignedContent
    mdm: MdmPayload
    roots: list[x509.Certificate]
    identity_payload: dict[str, Any]

    @property
    def identifier(self) -> str:
        return str(self.plist.get("PayloadIdentifier", ""))

    @property
    def identity_kind(self) -> str:
        return "scep" if self.identity_payload.get("PayloadType") == SCEP_PAYLOAD else "pkcs12"


# ---- CMS -----------------------------------------------------------------------------------------


def _verify_signer_signature(signer_info: cms.SignerInfo, cert: x509.Certificate, content: bytes) -> None:
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        raise ProfileError(f"unsupported digest algorithm {digest_name}", code=1004)
    signed_attrs = signer_info["signed_attrs"]
    if signed_attrs.native is not None and len(signed_attrs):
        digest = next(
            (a["values"][0].native for a in signed_attrs if a["type"].native == "message_digest"), None
        )
        if digest != hashlib.new(digest_name, content).digest():
            raise ProfileError("profile content does not match its signature (message digest)", code=1004)
        # The signature covers the DER of the attributes re-tagged from [0] IMPLICIT to SET OF.
        to_verify = b"\x31" + signed_attrs.dump()[1:]
    else:
        to_verify = content
    signature = signer_info["signature"].native
    algo = signer_info["signature_algorithm"].signature_algo
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if algo == "rsassa_pss":
                pad = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=padding.PSS.AUTO)
            key.verify(signature, to_verify, pad, hash_cls())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, to_verify, ec.ECDSA(hash_cls()))
        else:
            raise ProfileError(f"unsupported signer key type {type(key).__name__}", code=1004)
    except InvalidSignature:
        raise ProfileError("profile signature is not valid", code=1004) from None


def _find_signer(signer_info: cms.SignerInfo, certs: list[x509.Certificate]) -> x509.Certificate:
    sid = signer_info["sid"]
    for cert in certs:
        if sid.name == "issuer_and_serial_number":
            isn = sid.chosen
            if (
                cert.serial_number == isn["serial_number"].native
                and cert.issuer.public_bytes() == isn["issuer"].dump()
            ):
                return cert
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == sid.chosen.native:
                return cert
    raise ProfileError("the signer's certificate is not in the profile", code=1004)


def _chains_to(
    signer: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime,
) -> bool:
    if not roots:
        return False
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(now)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(signer, intermediates)
    except VerificationError:
        return False
    return True


def unwrap_signed(
    data: bytes,
    trusted_roots: list[x509.Certificate],
    *,
    require_signed: bool = True,
    require_trusted: bool = True,
    now: datetime | None = None,
) -> SignedContent:
    """The content of an attached CMS SignedData after checking its signature.

    Data that is not CMS is returned as unsigned content unless ``require_signed``. A signature
    that does not verify is always an error; a valid signature by a certificate that does not chain
    to ``trusted_roots`` is an error only if ``require_trusted`` (iOS installs such a profile
    as "Not Verified").
    """
    stripped = data.lstrip()
    if stripped.startswith((b"<?xml", b"<plist", b"bplist")):
        if require_signed:
            raise ProfileError("profile is not signed", code=1004)
        return SignedContent(content=data, signer=None)
    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "signed_data":
            raise ProfileError(f"CMS content type {info['content_type'].native} is not signed data")
        signed = info["content"]
        content = signed["encap_content_info"]["content"].native
        signer_infos = list(signed["signer_infos"])
        certs = [
            x509.load_der_x509_certificate(c.chosen.dump())
            for c in (signed["certificates"] or [])
            if c.name == "certificate"
        ]
    except ProfileError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError variants on bad DER
        raise ProfileError(f"profile is neither a plist nor valid CMS: {exc}") from None
    if not isinstance(content, bytes):
        raise ProfileError("signed profile has no attached content (detached signature)")
    if len(signer_infos) != 1:
        raise ProfileError(f"expected one signer, found {len(signer_infos)}", code=1004)
    signer = _find_signer(signer_infos[0], certs)
    _verify_signer_signature(signer_infos[0], signer, content)
    when = now or datetime.now(UTC)
    if not signer.not_valid_before_utc <= when <= signer.not_valid_after_utc:
        raise ProfileError("the profile signer's certificate is not valid now", code=1004)
    others = [c for c in certs if c is not signer]
    trusted = _chains_to(signer, others, trusted_roots, when)
    if require_trusted and not trusted:
        raise ProfileError(
            f"profile signer {signer.subject.rfc4514_string()} does not chain to a trusted root", code=1004
        )
    return SignedContent(content=content, signer=signer, certificates=certs, trusted=trusted)


# ---- plist payloads --------------------------------------------------------------------------------


def load_plist(content: bytes) -> dict[str, Any]:
    try:
        value = plistlib.loads(content)
    except Exception as exc:  # plistlib raises InvalidFileException, ExpatError, ValueError...
        raise ProfileError(f"profile content is not a property list: {exc}") from None
    if not isinstance(value, dict):
        raise ProfileError("profile is not a dictionary")
    if value.get("PayloadType") != "Configuration":
        raise ProfileError(f"PayloadType is {value.get('PayloadType')!r}, expected 'Configuration'")
    for key in ("PayloadIdentifier", "PayloadUUID"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise ProfileError(f"profile lacks {key}", code=1002)
    content_list = value.get("PayloadContent", [])
    if not isinstance(content_list, list) or not all(isinstance(p, dict) for p in content_list):
        raise ProfileError("PayloadContent is not an array of dictionaries", code=1003)
    return value


def _certificate(payload: dict[str, Any]) -> x509.Certificate:
    data = payload.get("PayloadContent")
    if not isinstance(data, bytes):
        raise ProfileError(f"{payload.get('PayloadType')} payload has no certificate data", code=1002)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except CERTIFICATE_ERRORS:
        raise ProfileError(
            "certificate payload is malformed", code=1003, domain="MCCertificateErrorDomain"
        ) from None


def payload_certificates(plist: dict[str, Any]) -> list[tuple[dict[str, Any], x509.Certificate]]:
    """Every (payload, certificate) of the certificate payloads in a profile."""
    return [
        (p, _certificate(p)) for p in plist.get("PayloadContent", []) if p.get("PayloadType") in CERT_PAYLOADS
    ]


def _mdm_payload(payload: dict[str, Any]) -> MdmPayload:
    def text(key: str, required: bool = True) -> str:
        value = payload.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value:
            raise ProfileError(f"com.apple.mdm payload lacks {key}", code=1002)
        return value

    server_url = text("ServerURL")
    rights = payload.get("AccessRights", 0)
    if not isinstance(rights, int) or isinstance(rights, bool) or not 1 <= rights <= 8191:
        raise ProfileError("com.apple.mdm AccessRights must be an integer between 1 and 8191", code=1003)
    sign = payload.get("SignMessage", False)
    if not isinstance(sign, bool):
        raise ProfileError("com.apple.mdm SignMessage must be a boolean", code=1003)
    caps = payload.get("ServerCapabilities", [])
    return MdmPayload(
        server_url=server_url,
        check_in_url=text("CheckInURL", required=False) or server_url,
        topic=text("Topic"),
        identity_uuid=text("IdentityCertificateUUID"),
        sign_message=sign,
        access_rights=rights,
        check_out_when_removed=bool(payload.get("CheckOutWhenRemoved", False)),
        identifier=text("PayloadIdentifier"),
        server_capabilities=[str(c) for c in caps] if isinstance(caps, list) else [],
    )


def parse_enrollment(
    data: bytes, trusted_roots: list[x509.Certificate] | None = None, *, now: datetime | None = None
) -> EnrollmentProfile:
    """Verify and read an enrollment profile.

    With ``trusted_roots`` the signer must chain to one of them. Without, the root CA payloads
    inside the profile are the anchors (what a user accepts when installing a "Not Verified"
    profile), but the signature itself must still be intact.
    """
    first = unwrap_signed(data, trusted_roots or [], require_trusted=False, now=now)
    plist = load_plist(first.content)
    payloads: list[dict[str, Any]] = plist["PayloadContent"]
    roots = [c for p, c in payload_certificates(plist) if p.get("PayloadType") == ROOT_PAYLOAD]
    signed = first
    if not first.trusted:
        anchors = roots if trusted_roots is None else []
        if first.signer is None or not _chains_to(
            first.signer, first.certificates, anchors, now or datetime.now(UTC)
        ):
            raise ProfileError(
                "profile signer does not chain to a trusted root"
                + ("" if trusted_roots is None else " (the given CA)"),
                code=1004,
            )
        signed = SignedContent(first.content, first.signer, first.certificates, trusted=True)
    mdm = [p for p in payloads if p.get("PayloadType") == MDM_PAYLOAD]
    if len(mdm) != 1:
        raise ProfileError(f"an enrollment profile needs exactly one com.apple.mdm payload, found {len(mdm)}")
    mdm_payload = _mdm_payload(mdm[0])
    identity = [p for p in payloads if p.get("PayloadUUID") == mdm_payload.identity_uuid]
    if not identity or identity[0].get("PayloadType") not in (PKCS12_PAYLOAD, SCEP_PAYLOAD):
        raise ProfileError(
            "IdentityCertificateUUID does not name a PKCS#12 or SCEP payload in the profile", code=1002
        )
    return EnrollmentProfile(
        plist=plist, signed=signed, mdm=mdm_payload, roots=roots, identity_payload=identity[0]
    )


def identity_from_pkcs12(payload: dict[str, Any]) -> Identity:
    """The device identity in a com.apple.security.pkcs12 payload, opened with its Password."""
    data = payload.get("PayloadContent")
    if not isinstance(data, bytes):
        raise ProfileError("PKCS#12 payload has no data", code=1002)
    password = payload.get("Password")
    if password is not None and not isinstance(password, str):
        raise ProfileError("PKCS#12 Password must be a string", code=1003)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    except ValueError:
        raise ProfileError(
            "cannot open the PKCS#12 identity (wrong password or malformed)",
            code=9000,
            domain="MCCertificateErrorDomain",
        ) from None
    if cert is None or not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ProfileError("PKCS#12 payload holds no identity", code=9006, domain="MCCertificateErrorDomain")
    return Identity(key=key, certificate=cert, chain=list(extra or []))
