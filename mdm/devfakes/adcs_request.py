"""What the AD CS fake reads from ``CertRequest``: a PKCS#10, or a CMS SignedData that wraps one
(enroll on behalf of: signed by an Enrollment Agent, the requester name in a signed attribute).

cryptography parses and verifies PKCS#10 but cannot read a CMS SignedData's signer infos and
signed attributes, so the CMS part is read with asn1crypto and its signature checked here by hand
(RFC 5652 §5.4: the DER of the signed attributes as a SET, the messageDigest attribute equal to
the digest of the encapsulated content).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import ClassVar

from asn1crypto import cms
from asn1crypto import core as asn1core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

REQUESTER_NAME_OID = "1.3.6.1.4.1.311.13.2.1"  # szOID_ENROLLMENT_NAME_VALUE_PAIR
_PEM_LINE = re.compile(r"-----(BEGIN|END) [A-Z0-9 #]+-----")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}

# AD CS's messages for what a request can get wrong (the disposition message of the page).
BAD_ASN1 = "ASN1 bad tag value met. 0x8009310b (ASN: 267 CRYPT_E_ASN1_BADTAG)"
BAD_SIGNATURE = "Denied by Policy Module  0x80090006, Invalid Signature."
BAD_CMS_SIGNATURE = ("Denied by Policy Module  0x80096010, "
                     "The digital signature of the object did not verify.")
NOT_PKCS10 = ("The request contains no certificate request. 0x80094805 "
              "(-2146875387 CERTSRV_E_BAD_REQUESTSTATUS)")


class Refused(Exception):
    """The request is denied; ``str(exc)`` is AD CS's disposition message."""


class NameValuePair(asn1core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """``EnrollmentNameValuePair ::= SEQUENCE { name BMPString, value BMPString }``."""

    _fields: ClassVar = [("name", asn1core.BMPString), ("value", asn1core.BMPString)]


@dataclass(frozen=True)
class Submission:
    csr: x509.CertificateSigningRequest
    agent: x509.Certificate | None = None   # the CMS signer (enroll on behalf of)
    requester_name: str | None = None        # "DOMAIN\\user" from the signed attribute


def decode(text: str) -> bytes:
    """The DER of a base64 request, PEM armour or not (AD CS accepts both)."""
    body = "".join(_PEM_LINE.sub("", text).split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused(BAD_ASN1) from exc


def parse(text: str) -> Submission:
    """A verified submission. Raises ``Refused`` (the message the page shows)."""
    der = decode(text)
    if not der:
        raise Refused(BAD_ASN1)
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        return _parse_cms(der)
    if not csr.is_signature_valid:
        raise Refused(BAD_SIGNATURE)
    return Submission(csr)


def _parse_cms(der: bytes) -> Submission:
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise Refused(NOT_PKCS10)
        signed = info["content"]
        inner = signed["encap_content_info"]["content"].native
        signers = list(signed["signer_infos"])
        certificates = [c.chosen.dump() for c in signed["certificates"] or []
                        if c.name == "certificate"]
    except Refused:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused(BAD_ASN1) from exc
    if not isinstance(inner, bytes) or len(signers) != 1:
        raise Refused(NOT_PKCS10)
    try:
        csr = x509.load_der_x509_csr(inner)
    except ValueError as exc:
        raise Refused(NOT_PKCS10) from exc
    if not csr.is_signature_valid:
        raise Refused(BAD_SIGNATURE)
    signer = signers[0]
    agent = _signer_certificate(signer, [x509.load_der_x509_certificate(c) for c in certificates])
    requester = _verify_signer(signer, agent, inner)
    return Submission(csr, agent, requester)


def _signer_certificate(signer: cms.SignerInfo,
                        certificates: list[x509.Certificate]) -> x509.Certificate:
    sid = signer["sid"]
    for cert in certificates:
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            if (cert.serial_number == wanted["serial_number"].native
                    and cert.issuer.public_bytes() == wanted["issuer"].dump()):
                return cert
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            except x509.ExtensionNotFound:
                continue
            if ski.digest == sid.chosen.native:
                return cert
    raise Refused(BAD_CMS_SIGNATURE)


def _verify_signer(signer: cms.SignerInfo, agent: x509.Certificate, content: bytes) -> str | None:
    """Check the signature over the signed attributes and the message digest; returns the
    requester name attribute's value."""
    algorithm = _HASHES.get(signer["digest_algorithm"]["algorithm"].native)
    attributes = signer["signed_attrs"]
    if algorithm is None or not attributes:
        raise Refused(BAD_CMS_SIGNATURE)
    digest = hashes.Hash(algorithm())
    digest.update(content)
    requester: str | None = None
    digest_ok = False
    for attribute in attributes:
        kind = attribute["type"].dotted
        if attribute["type"].native == "message_digest":
            digest_ok = attribute["values"][0].native == digest.finalize()
        elif kind == REQUESTER_NAME_OID:
            for value in attribute["values"]:
                pair = NameValuePair.load(value.dump())
                if str(pair["name"].native).lower() == "requestername":
                    requester = str(pair["value"].native)
    if not digest_ok:
        raise Refused(BAD_CMS_SIGNATURE)
    signed_bytes = b"\x31" + attributes.dump()[1:]  # [0] IMPLICIT → SET OF for the signature
    signature = signer["signature"].native
    key = agent.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if signer["signature_algorithm"].signature_algo == "rsassa_pss":
                pss = padding.PSS(mgf=padding.MGF1(algorithm()), salt_length=padding.PSS.AUTO)
                key.verify(signature, signed_bytes, pss, algorithm())
            else:
                key.verify(signature, signed_bytes, padding.PKCS1v15(), algorithm())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed_bytes, ec.ECDSA(algorithm()))
        else:
            raise Refused(BAD_CMS_SIGNATURE)
    except InvalidSignature as exc:
        raise Refused(BAD_CMS_SIGNATURE) from exc
    return requester
