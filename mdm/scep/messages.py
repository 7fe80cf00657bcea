"""pkiMessage (RFC 8894 §3.2): CMS SignedData carrying SCEP's signed attributes and, inside, the
pkcsPKIEnvelope. Used by the server (requests in, CertRep out) and by the client (the reverse).

``cryptography`` neither verifies CMS SignedData nor signs it with custom authenticated
attributes, so both directions are written here on asn1crypto structures with ``cryptography``
doing the hashing and the signature primitive.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from mdm.scep.protocol import (
    OID_FAIL_INFO,
    OID_FAIL_INFO_TEXT,
    OID_MESSAGE_TYPE,
    OID_PKI_STATUS,
    OID_RECIPIENT_NONCE,
    OID_SENDER_NONCE,
    OID_TRANSACTION_ID,
    FailInfo,
    MalformedMessage,
    MessageType,
    PkiStatus,
    ScepFailure,
)

# asn1crypto digest names we accept; MD5 and anything unknown is badAlg.
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
MAX_TRANSACTION_ID = 128
MAX_NONCE = 64
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_nonce() -> bytes:
    return os.urandom(16)


@dataclass(frozen=True)
class PkiMessage:
    """A parsed pkiMessage. Nothing in it is trusted until ``verify`` has passed."""

    message_type: str
    transaction_id: str
    sender_nonce: bytes
    recipient_nonce: bytes | None
    pki_status: str | None
    fail_info: str | None
    fail_info_text: str | None
    signing_time: datetime | None
    digest_algorithm: str
    content: bytes | None  # eContent: the pkcsPKIEnvelope DER, absent in FAILURE/PENDING replies
    certificates: tuple[x509.Certificate, ...]
    signer: x509.Certificate | None
    signature: bytes = field(repr=False)
    signature_algorithm: str = field(repr=False)
    signature_hash: str | None = field(repr=False)
    signed_attributes: bytes = field(repr=False)  # DER with the SET OF tag, as signed
    message_digest: bytes | None = field(repr=False)
    content_type_attribute: str | None = field(repr=False)

    def verify(self, signer: x509.Certificate | None = None) -> None:
        """Check algorithms, the message digest and the signature; ScepFailure otherwise."""
        hash_cls = DIGESTS.get(self.digest_algorithm)
        if hash_cls is None:
            raise ScepFailure(FailInfo.BAD_ALG, f"digest algorithm {self.digest_algorithm} is not supported")
        if self.signature_hash is not None and self.signature_hash != self.digest_algorithm:
            if self.signature_hash not in DIGESTS:
                raise ScepFailure(FailInfo.BAD_ALG, f"signature hash {self.signature_hash} is not supported")
        cert = signer or self.signer
        if cert is None:
            raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the signer's certificate is not in the message")
        if self.content_type_attribute not in (None, "data"):
            raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "contentType attribute is not id-data")
        digest = hashes.Hash(hash_cls())
        digest.update(self.content or b"")
        if self.message_digest is None or digest.finalize() != self.message_digest:
            raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "messageDigest does not match the content")
        try:
            public_key = cert.public_key()
        except UnsupportedAlgorithm as exc:
            raise ScepFailure(FailInfo.BAD_ALG, f"the signer's key type is not supported: {exc}") from None
        signature_hash = DIGESTS[self.signature_hash or self.digest_algorithm]()
        try:
            if self.signature_algorithm == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(self.signature, self.signed_attributes, padding.PKCS1v15(), signature_hash)
            elif self.signature_algorithm == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(self.signature, self.signed_attributes, ec.ECDSA(signature_hash))
            else:
                raise ScepFailure(
                    FailInfo.BAD_ALG,
                    f"signature algorithm {self.signature_algorithm} with a "
                    f"{type(public_key).__name__} is not supported",
                )
        except InvalidSignature:
            raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "signature does not verify") from None


def _string(value: core.Asn1Value) -> str:
    parsed = core.load(value.dump())
    if not isinstance(parsed, core.AbstractString):
        raise ValueError(f"expected a string, got {type(parsed).__name__}")
    return str(parsed.native)


def _octets(value: core.Asn1Value) -> bytes:
    parsed = core.OctetString.load(value.dump())
    return bytes(parsed.native)


def _find_signer(
    certs: list[tuple[asn1_x509.Certificate, x509.Certificate]], sid: cms.SignerIdentifier
) -> x509.Certificate | None:
    for asn1_cert, cert in certs:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if ias["serial_number"].native == asn1_cert.serial_number and ias["issuer"] == asn1_cert.issuer:
                return cert
        elif sid.chosen.native == asn1_cert.key_identifier:
            return cert
    return None


def parse(der: bytes) -> PkiMessage:
    """Parse a pkiMessage; MalformedMessage when it is not one (too broken to answer in SCEP)."""
    try:
        return _parse(der)
    except MalformedMessage:
        raise
    # asn1crypto parses lazily and signals broken input with several exception types.
    except (ValueError, x509.InvalidVersion, TypeError, KeyError, IndexError, OverflowError,
            AttributeError) as exc:
        raise MalformedMessage(f"not a valid pkiMessage: {exc}") from None


def _parse(der: bytes) -> PkiMessage:
    if not der:
        raise MalformedMessage("empty message")
    info = cms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != "signed_data":
        raise MalformedMessage("pkiMessage is not CMS SignedData")
    signed = info["content"]
    signer_infos = signed["signer_infos"]
    if len(signer_infos) != 1:
        raise MalformedMessage("pkiMessage must have exactly one signer")
    signer_info = signer_infos[0]
    encap = signed["encap_content_info"]
    content = encap["content"].native if encap["content"] else None
    if content is not None and not isinstance(content, bytes):
        raise MalformedMessage("pkiMessage content is not an OCTET STRING")
    certs: list[tuple[asn1_x509.Certificate, x509.Certificate]] = []
    for choice in signed["certificates"] or []:
        if choice.name == "certificate":
            certs.append((choice.chosen, x509.load_der_x509_certificate(choice.chosen.dump())))
    attrs = signer_info["signed_attrs"]
    if not attrs:
        raise MalformedMessage("pkiMessage has no signed attributes")
    values: dict[str, core.Asn1Value] = {}
    for attr in attrs:
        if len(attr["values"]) != 1:
            raise MalformedMessage(f"attribute {attr['type'].dotted} must have exactly one value")
        values[attr["type"].dotted] = attr["values"][0]
    for oid, name in (
        (OID_TRANSACTION_ID, "transactionID"),
        (OID_MESSAGE_TYPE, "messageType"),
        (OID_SENDER_NONCE, "senderNonce"),
    ):
        if oid not in values:
            raise MalformedMessage(f"pkiMessage lacks the {name} attribute")
    transaction_id = _string(values[OID_TRANSACTION_ID])
    if not 0 < len(transaction_id) <= MAX_TRANSACTION_ID or not transaction_id.isprintable():
        raise MalformedMessage(f"transactionID must be 1-{MAX_TRANSACTION_ID} printable characters")
    sender_nonce = _octets(values[OID_SENDER_NONCE])
    if not 0 < len(sender_nonce) <= MAX_NONCE:
        raise MalformedMessage("senderNonce must be 1-64 bytes")
    signing_time = None
    message_digest = None
    content_type_attr = None
    for attr in attrs:
        kind = attr["type"].native
        if kind == "signing_time":
            signing_time = attr["values"][0].native
        elif kind == "message_digest":
            message_digest = attr["values"][0].native
        elif kind == "content_type":
            content_type_attr = attr["values"][0].native
    signed_attrs = attrs.untag().dump() if hasattr(attrs, "untag") else b"\x31" + attrs.dump()[1:]
    algorithm = signer_info["signature_algorithm"]
    try:
        signature_hash: str | None = algorithm.hash_algo
    except ValueError:
        signature_hash = None
    return PkiMessage(
        message_type=_string(values[OID_MESSAGE_TYPE]),
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        recipient_nonce=_octets(values[OID_RECIPIENT_NONCE]) if OID_RECIPIENT_NONCE in values else None,
        pki_status=_string(values[OID_PKI_STATUS]) if OID_PKI_STATUS in values else None,
        fail_info=_string(values[OID_FAIL_INFO]) if OID_FAIL_INFO in values else None,
        fail_info_text=_string(values[OID_FAIL_INFO_TEXT]) if OID_FAIL_INFO_TEXT in values else None,
        signing_time=signing_time,
        digest_algorithm=signer_info["digest_algorithm"]["algorithm"].native,
        content=content,
        certificates=tuple(c for _, c in certs),
        signer=_find_signer(certs, signer_info["sid"]),
        signature=signer_info["signature"].native,
        signature_algorithm=algorithm.signature_algo,
        signature_hash=signature_hash,
        signed_attributes=signed_attrs,
        message_digest=message_digest,
        content_type_attribute=content_type_attr,
    )


# ---- building ------------------------------------------------------------------------------------
def _attr(oid: str, value: core.Asn1Value) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": oid, "values": [value]})


def sign(
    *,
    content: bytes | None,
    scep_attributes: Sequence[cms.CMSAttribute],
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    digest: str = "sha256",
    certificates: Sequence[x509.Certificate] = (),
    signing_time: datetime | None = None,
) -> bytes:
    """CMS SignedData over ``content`` (id-data) with the standard plus ``scep_attributes``."""
    hash_cls = DIGESTS[digest]
    h = hashes.Hash(hash_cls())
    h.update(content or b"")
    attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [h.finalize()]}),
            cms.CMSAttribute(
                {
                    "type": "signing_time",
                    "values": [cms.Time(name="utc_time", value=signing_time or datetime.now(UTC))],
                }
            ),
            *scep_attributes,
        ]
    )
    to_sign = attrs.dump()  # universal SET OF tag: what RFC 5652 §5.4 says is signed
    if isinstance(signer_key, rsa.RSAPrivateKey):
        signature = signer_key.sign(to_sign, padding.PKCS1v15(), hash_cls())
        signature_algorithm = "rsassa_pkcs1v15"
    else:
        signature = signer_key.sign(to_sign, ec.ECDSA(hash_cls()))
        signature_algorithm = f"{digest}_ecdsa"
    asn1_signer = asn1_x509.Certificate.load(signer_cert.public_bytes(serialization.Encoding.DER))
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value=cms.IssuerAndSerialNumber(
                    {"issuer": asn1_signer.issuer, "serial_number": asn1_signer.serial_number}
                ),
            ),
            "digest_algorithm": {"algorithm": digest},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": signature_algorithm},
            "signature": signature,
        }
    )
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    all_certs = [signer_cert, *[c for c in certificates if c != signer_cert]]
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": digest}],
            "encap_content_info": encap,
            "certificates": [
                cms.CertificateChoices(
                    name="certificate",
                    value=asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)),
                )
                for c in all_certs
            ],
            "signer_infos": [signer_info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def request(
    *,
    message_type: MessageType,
    transaction_id: str,
    sender_nonce: bytes,
    envelope: bytes,
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    digest: str = "sha256",
    signing_time: datetime | None = None,
) -> bytes:
    """A client's pkiMessage (PKCSReq, RenewalReq, CertPoll, GetCert, GetCRL)."""
    return sign(
        content=envelope,
        scep_attributes=[
            _attr(OID_TRANSACTION_ID, core.PrintableString(transaction_id)),
            _attr(OID_MESSAGE_TYPE, core.PrintableString(message_type.value)),
            _attr(OID_SENDER_NONCE, core.OctetString(sender_nonce)),
        ],
        signer_cert=signer_cert,
        signer_key=signer_key,
        digest=digest,
        signing_time=signing_time,
    )


def cert_rep(
    *,
    transaction_id: str,
    recipient_nonce: bytes,
    status: PkiStatus,
    signer_cert: x509.Certificate,
    signer_key: PrivateKey,
    digest: str = "sha256",
    envelope: bytes | None = None,
    fail_info: FailInfo | None = None,
    fail_info_text: str | None = None,
    certificates: Sequence[x509.Certificate] = (),
) -> bytes:
    """The server's CertRep. FAILURE and PENDING carry no pkcsPKIEnvelope (RFC 8894 §3.3.2).

    Their eContent is present but empty rather than absent: OpenSSL's PKCS7_verify, which
    OpenSSL-based clients (certmonger, sscep) use on every reply, refuses absent content.
    """
    attributes = [
        _attr(OID_TRANSACTION_ID, core.PrintableString(transaction_id)),
        _attr(OID_MESSAGE_TYPE, core.PrintableString(MessageType.CERT_REP.value)),
        _attr(OID_PKI_STATUS, core.PrintableString(status.value)),
        _attr(OID_SENDER_NONCE, core.OctetString(new_nonce())),
        _attr(OID_RECIPIENT_NONCE, core.OctetString(recipient_nonce)),
    ]
    if status == PkiStatus.FAILURE:
        attributes.append(
            _attr(OID_FAIL_INFO, core.PrintableString((fail_info or FailInfo.BAD_REQUEST).value))
        )
        if fail_info_text:
            attributes.append(_attr(OID_FAIL_INFO_TEXT, core.UTF8String(fail_info_text[:200])))
    return sign(
        content=envelope if status == PkiStatus.SUCCESS else b"",
        scep_attributes=attributes,
        signer_cert=signer_cert,
        signer_key=signer_key,
        digest=digest,
        certificates=certificates,
    )


def degenerate(certs: Sequence[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 (GetCACert, and the issued certificate inside a CertRep)."""
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)


def certificates_of(der: bytes) -> list[x509.Certificate]:
    return pkcs7.load_der_pkcs7_certificates(der)
