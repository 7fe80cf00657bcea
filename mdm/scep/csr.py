"""The PKCS#10 request inside a PKCSReq/RenewalReq: parsed and checked against ``[scep]`` (key
type and size, common name), its challengePassword, and key fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AttributeOID, NameOID

from mdm.scep.protocol import FailInfo, ScepFailure
from mdm.scep.settings import ScepConfig


def fingerprint(public_key: CertificatePublicKeyTypes) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class CsrRequest:
    csr: x509.CertificateSigningRequest
    common_name: str
    key_fingerprint: str
    signer_fingerprint: str


def load_csr(der: bytes, settings: ScepConfig) -> CsrRequest:
    try:
        csr = x509.load_der_x509_csr(der)
        public_key = csr.public_key()
        valid = csr.is_signature_valid
    except UnsupportedAlgorithm as exc:
        raise ScepFailure(FailInfo.BAD_ALG, "the CSR uses an unsupported algorithm", str(exc)) from None
    except ValueError as exc:
        raise ScepFailure(
            FailInfo.BAD_REQUEST, "the envelope does not hold a valid PKCS#10 CSR", str(exc)
        ) from None
    if not valid:
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the CSR's signature does not verify")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < settings.min_rsa_bits:
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                f"RSA key of {public_key.key_size} bits is below the minimum of {settings.min_rsa_bits}",
            )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise ScepFailure(FailInfo.BAD_ALG, f"elliptic curve {public_key.curve.name} is not supported")
    else:
        raise ScepFailure(FailInfo.BAD_ALG, f"{type(public_key).__name__} keys are not supported")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value).strip() if names else ""
    if not cn:
        raise ScepFailure(FailInfo.BAD_REQUEST, "the CSR subject has no common name")
    return CsrRequest(csr, cn, fingerprint(public_key), "")


def challenge_of(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
