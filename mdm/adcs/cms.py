"""Enroll on behalf of: a PKCS#10 wrapped in a CMS SignedData signed by the Enrollment Agent.

AD CS accepts a request for another user when it comes signed by a certificate with the
Certificate Request Agent EKU and names the user in the signed attribute
``1.3.6.1.4.1.311.13.2.1`` (szOID_ENROLLMENT_NAME_VALUE_PAIR: SEQUENCE { name BMPString
"requestername", value BMPString "DOMAIN\\user" }). asn1crypto builds the structure (it has no
type for Microsoft's attribute: the two-field SEQUENCE is declared here); cryptography signs.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mdm.pki.keys import PrivateKey

ENROLLMENT_NAME_VALUE_PAIR = "1.3.6.1.4.1.311.13.2.1"


class EnrollmentNameValuePair(core.Sequence):  # type: ignore[misc, unused-ignore]  # asn1crypto is untyped
    _fields = [("name", core.BMPString), ("value", core.BMPString)]


def requester_name(domain: str, user: str) -> str:
    """``DOMAIN\\user`` (a ``user@realm`` keeps only the user part)."""
    account = user.split("@", 1)[0] if "@" in user else user
    if not domain or not account or "\\" in account:
        raise ValueError(f"cannot build a requester name from domain {domain!r} and user {user!r}")
    return f"{domain}\\{account}"


def wrap_on_behalf(csr_der: bytes, requester: str, agent_cert: x509.Certificate, agent_key: PrivateKey,
                   now: datetime | None = None) -> bytes:
    """The DER ContentInfo(SignedData) carrying ``csr_der``, signed by the agent for ``requester``."""
    cert = asn1_x509.Certificate.load(agent_cert.public_bytes(serialization.Encoding.DER))
    name_value = EnrollmentNameValuePair({"name": "requestername", "value": requester})
    signing_time = cms.Time({"utc_time": (now or datetime.now(UTC)).replace(microsecond=0)})
    signed_attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(csr_der).digest()]}),
        cms.CMSAttribute({"type": "signing_time", "values": [signing_time]}),
        cms.CMSAttribute({"type": ENROLLMENT_NAME_VALUE_PAIR, "values": [core.Any.load(name_value.dump())]}),
    ])
    to_sign = signed_attrs.dump()  # DER of the SET OF (the [0] tag is not signed: RFC 5652 5.4)
    if isinstance(agent_key, rsa.RSAPrivateKey):
        signature = agent_key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        algorithm = "sha256_rsa"
    elif isinstance(agent_key, ec.EllipticCurvePrivateKey):
        signature = agent_key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        algorithm = "sha256_ecdsa"
    else:
        raise ValueError(f"{type(agent_key).__name__} Enrollment Agent keys cannot sign (RSA or EC)")
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": signed_attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": algorithm}),
        "signature": signature,
    })
    signed_data = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {"content_type": "data", "content": csr_der},
        "certificates": [cert],
        "signer_infos": [signer],
    })
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump())
