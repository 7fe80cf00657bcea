"""pkcsPKIEnvelope: CMS EnvelopedData with one RSA key-transport recipient (RFC 8894 §3.2.2).

AES-CBC goes through ``cryptography``'s PKCS#7 code. That code refuses 3DES, which older SCEP
clients (and the iOS devices of a few generations ago) still use, so 3DES-CBC is done here by
hand: the structure is parsed/built with asn1crypto and the RSA and 3DES primitives come from
``cryptography`` (TripleDES lives in ``cryptography.hazmat.decrepit``).
"""

from __future__ import annotations

import os
from typing import Literal

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from mdm.scep.protocol import FailInfo, ScepFailure

Encryption = Literal["aes128", "aes256", "3des"]

# Content-encryption algorithm OIDs -> our names. Anything else (DES, RC2, ...) is badAlg.
_ALGORITHMS: dict[str, Encryption] = {
    "2.16.840.1.101.3.4.1.2": "aes128",
    "2.16.840.1.101.3.4.1.42": "aes256",
    "1.2.840.113549.3.7": "3des",
}
_OIDS = {name: oid for oid, name in _ALGORITHMS.items()}
_OID_NAMES = {
    "2.16.840.1.101.3.4.1.22": "AES-192-CBC",
    "1.3.14.3.2.7": "DES-CBC",
    "1.2.840.113549.3.2": "RC2-CBC",
    "1.2.840.113549.3.4": "RC4",
}
_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"


def _bad(text: str, detail: str = "") -> ScepFailure:
    return ScepFailure(FailInfo.BAD_MESSAGE_CHECK, text, detail)


def _parse(der: bytes) -> cms.EnvelopedData:
    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].dotted != "1.2.840.113549.1.7.3":
            raise ScepFailure(FailInfo.BAD_REQUEST, "pkcsPKIEnvelope is not EnvelopedData")
        enveloped = info["content"]
        enveloped["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].dotted  # noqa: B018
        enveloped["recipient_infos"].native  # noqa: B018 - forces a full parse of the recipients
    except ScepFailure:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise ScepFailure(FailInfo.BAD_REQUEST, "pkcsPKIEnvelope is not valid DER", str(exc)) from None
    if not isinstance(enveloped, cms.EnvelopedData):
        raise ScepFailure(FailInfo.BAD_REQUEST, "pkcsPKIEnvelope is not EnvelopedData")
    return enveloped


def algorithm_of(der: bytes) -> Encryption:
    """The content-encryption algorithm of an envelope, or ScepFailure(badAlg)."""
    enveloped = _parse(der)
    oid = enveloped["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].dotted
    name = _ALGORITHMS.get(oid)
    if name is None:
        shown = _OID_NAMES.get(oid, oid)
        raise ScepFailure(
            FailInfo.BAD_ALG, f"content encryption {shown} is not supported (use AES-128, AES-256 or 3DES)"
        )
    return name


def _matches(rid: cms.RecipientIdentifier, cert: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        issuer_der = cert.issuer.public_bytes()
        return bool(ias["serial_number"].native == cert.serial_number and ias["issuer"].dump() == issuer_der)
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return bool(rid.chosen.native == ski)


def decrypt(der: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> tuple[bytes, Encryption]:
    """Decrypt an envelope addressed to ``certificate``; returns (content, algorithm)."""
    name = algorithm_of(der)
    enveloped = _parse(der)
    recipient = None
    for info in enveloped["recipient_infos"]:
        if info.name == "ktri" and _matches(info.chosen["rid"], certificate):
            recipient = info.chosen
            break
    if recipient is None:
        raise _bad("pkcsPKIEnvelope is not addressed to this server's encryption certificate")
    if recipient["key_encryption_algorithm"]["algorithm"].dotted != _RSA_ENCRYPTION:
        raise ScepFailure(FailInfo.BAD_ALG, "key transport must be rsaEncryption (PKCS#1 v1.5)")
    if name == "3des":
        return _decrypt_3des(enveloped, recipient, key), name
    try:
        content = pkcs7.pkcs7_decrypt_der(der, certificate, key, [])
    except UnsupportedAlgorithm as exc:
        raise ScepFailure(FailInfo.BAD_ALG, f"envelope algorithm not supported: {exc}") from None
    except ValueError as exc:
        raise _bad("pkcsPKIEnvelope could not be decrypted", str(exc)) from None
    return content, name


def _decrypt_3des(
    enveloped: cms.EnvelopedData, recipient: cms.KeyTransRecipientInfo, key: rsa.RSAPrivateKey
) -> bytes:
    eci = enveloped["encrypted_content_info"]
    params = eci["content_encryption_algorithm"]["parameters"]
    try:
        iv = (
            params.native
            if isinstance(params, core.OctetString)
            else core.OctetString.load(params.dump()).native
        )
        ciphertext = eci["encrypted_content"].native
    except (ValueError, TypeError) as exc:
        raise ScepFailure(FailInfo.BAD_REQUEST, "3DES envelope parameters are malformed", str(exc)) from None
    if not isinstance(iv, bytes) or len(iv) != 8 or not ciphertext or len(ciphertext) % 8:
        raise ScepFailure(FailInfo.BAD_REQUEST, "3DES envelope has a bad IV or ciphertext length")
    # The same message for every failure below: no padding oracle on the RSA key or the CBC padding.
    try:
        content_key = key.decrypt(recipient["encrypted_key"].native, padding.PKCS1v15())
        if len(content_key) != 24:
            raise ValueError("3DES key is not 24 bytes")
        decryptor = Cipher(TripleDES(content_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(64).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise _bad("pkcsPKIEnvelope could not be decrypted", str(exc)) from None


def encrypt(data: bytes, recipient: x509.Certificate, algorithm: Encryption = "aes256") -> bytes:
    """An envelope of ``data`` for ``recipient`` (RSA) as DER ContentInfo."""
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise ScepFailure(FailInfo.BAD_ALG, "the recipient certificate must have an RSA key (key transport)")
    if algorithm == "3des":
        return _encrypt_3des(data, recipient)
    cipher = algorithms.AES128 if algorithm == "aes128" else algorithms.AES256
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(data)
        .add_recipient(recipient)
        .set_content_encryption_algorithm(cipher)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def _encrypt_3des(data: bytes, recipient: x509.Certificate) -> bytes:
    public_key = recipient.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    content_key, iv = os.urandom(24), os.urandom(8)
    padder = sym_padding.PKCS7(64).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(TripleDES(content_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    rid = cms.RecipientIdentifier(
        name="issuer_and_serial_number",
        value=cms.IssuerAndSerialNumber(
            {
                "issuer": cms.Name.load(recipient.issuer.public_bytes()),
                "serial_number": recipient.serial_number,
            }
        ),
    )
    ktri = cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": rid,
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": public_key.encrypt(content_key, padding.PKCS1v15()),
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo(name="ktri", value=ktri)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": algos.EncryptionAlgorithm(
                    {"algorithm": _OIDS["3des"], "parameters": core.OctetString(iv)}
                ),
                "encrypted_content": ciphertext,
            },
        }
    )
    return bytes(cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())
