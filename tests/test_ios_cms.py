"""The fast DER reader of Mdm-Signature agrees with asn1crypto, and declines (so that asn1crypto
takes over) on BER and other layouts."""

from __future__ import annotations

import base64
import plistlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from ios_support import sign

from mdm.ios import cms


def _identity(kind: str) -> tuple[x509.Certificate, object]:
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(12345)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("attributes", [True, False])
def test_fast_reader_agrees_with_asn1crypto(kind: str, attributes: bool) -> None:
    cert, key = _identity(kind)
    body = plistlib.dumps({"Status": "Idle", "UDID": "u"})
    der = base64.b64decode(sign(body, cert, key, attributes=attributes))  # type: ignore[arg-type]
    fast, reference = cms.read_der(der), cms.read_asn1crypto(der)
    assert fast == reference
    assert fast.digest == "sha256" and len(fast.certificates) == 1 and not fast.pss
    assert (fast.signed_attrs is not None) == attributes
    if attributes:
        assert fast.signing_time is not None and abs(fast.signing_time - datetime.now(UTC)) < timedelta(
            minutes=1
        )
        assert fast.message_digest is not None and len(fast.message_digest) == 32


def test_ber_indefinite_length_falls_back_to_asn1crypto() -> None:
    cert, key = _identity("ec")
    der = base64.b64decode(sign(b"body", cert, key))  # type: ignore[arg-type]
    # Re-encode the outer ContentInfo with an indefinite length (BER), as streaming signers do.
    header_len = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    ber = b"\x30\x80" + der[header_len:] + b"\x00\x00"
    with pytest.raises(cms.DerError):
        cms.read_der(ber)
    assert cms.read(ber) == cms.read_der(der)


@pytest.mark.parametrize("junk", [b"", b"\x30", b"\x30\x05\x06\x03\x2a\x03\x04", b"\x31\x00", b"\xff" * 10])
def test_junk_is_refused_by_both_readers(junk: bytes) -> None:
    with pytest.raises((cms.DerError, ValueError, TypeError, KeyError, IndexError)):
        cms.read(junk)
