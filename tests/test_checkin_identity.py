"""The signer forms of an Mdm-Signature certificate, read from its DER (issue 12: a cold signed
request no longer parses the certificate with asn1crypto), match asn1crypto's reading exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mdm.ios.identity import IdentityError, _signer_entry


def _reference_sids(der: bytes) -> set[bytes]:
    parsed = asn1_x509.Certificate.load(der)
    tbs = parsed["tbs_certificate"]
    sids = {
        cms.IssuerAndSerialNumber({"issuer": tbs["issuer"], "serial_number": tbs["serial_number"]}).dump()
    }
    if parsed.key_identifier:
        sids.add(cms.SignerIdentifier({"subject_key_identifier": parsed.key_identifier}).dump())
    return sids


def _certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, serial: int, issuer_cn: str, ski: bool
) -> bytes:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
        .issuer_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                    *(
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, issuer_cn[i : i + 60])
                        for i in range(0, len(issuer_cn) - 2, 60)
                    ),
                    x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn[-2:]),
                ]
            )
        )
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
    )
    if ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("kind", "serial", "issuer_cn", "ski"),
    [
        ("rsa", 1, "CA", True),
        ("rsa", 2**159 - 1, "CA", False),  # a 20-byte serial
        ("rsa", 0x80, "CA", True),  # a serial whose DER needs a leading zero byte
        ("ec", 12345, "An issuing CA with a long name " * 6, True),  # a Name longer than 127 bytes
        ("ec", 7, "CA", False),
    ],
)
def test_signer_forms_match_asn1crypto(kind: str, serial: int, issuer_cn: str, ski: bool) -> None:
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    der = _certificate(key, serial=serial, issuer_cn=issuer_cn, ski=ski)
    entry = _signer_entry(der)
    assert set(entry.sids) == _reference_sids(der)
    assert entry.key_der == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    "mangle", [lambda d: d[:40], lambda d: b"\x31" + d[1:], lambda d: d[:4] + b"\x05" + d[5:]]
)
def test_malformed_certificates_are_refused(mangle: object) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = _certificate(key, serial=9, issuer_cn="CA", ski=True)
    with pytest.raises(IdentityError) as caught:
        _signer_entry(mangle(der))  # type: ignore[operator]
    assert caught.value.reason == "malformed"
