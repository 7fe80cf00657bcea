"""Reading the detached CMS SignedData of an ``Mdm-Signature`` header into the few parts that
signature verification needs.

Two readers produce the same ``SignedParts``:

- ``read_der``: a minimal hand-written DER walker over exactly the SignedData fields we use. It
  exists for speed: every signed poll goes through here, and asn1crypto's general object model
  costs ~0.5 ms per message where this costs ~15 µs (the idle-poll target is > 2,300/s on two
  cores). It accepts only definite-length DER in the layout of RFC 5652 §5 and raises
  ``DerError`` on anything else.
- ``read_asn1crypto``: the reference reader (asn1crypto's ``cms.ContentInfo``), used whenever the
  fast reader declines (BER indefinite lengths, unusual layouts) and by the tests to cross-check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms

OID_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")
OID_MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")
OID_SIGNING_TIME = bytes.fromhex("2a864886f70d010905")
DIGEST_OIDS = {
    bytes.fromhex("2b0e03021a"): "sha1",
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}
OID_RSASSA_PSS = bytes.fromhex("2a864886f70d01010a")


class DerError(ValueError):
    """Not the DER layout the fast reader handles (the caller falls back to asn1crypto)."""


@dataclass(frozen=True, slots=True)
class SignedParts:
    certificates: tuple[bytes, ...]  # DER of each certificate in the message
    sid: bytes  # DER of the SignerIdentifier (IssuerAndSerialNumber, or [0] SubjectKeyIdentifier)
    digest: str | None  # "sha256", ...; None when unsupported
    signed_attrs: bytes | None  # DER of the attributes re-tagged as SET (what the signature covers)
    message_digest: bytes | None
    signing_time: datetime | None
    pss: bool
    signature: bytes


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``."""
    if pos + 2 > end:
        raise DerError("truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tag")
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise DerError("indefinite or oversized length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise DerError("element runs past its parent")
    return tag, pos, pos + length


def _expect(buf: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    got, start, stop = _tlv(buf, pos, end)
    if got != tag:
        raise DerError(f"expected tag {tag:#x}, got {got:#x}")
    return start, stop


def _time(tag: int, text: bytes) -> datetime:
    value = text.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280: 50-99 -> 19xx)
        if len(value) != 13 or value[-1] != "Z":
            raise DerError("UTCTime form")
        year = int(value[:2])
        value = ("19" if year >= 50 else "20") + value
    elif tag != 0x18 or len(value) != 15 or value[-1] != "Z":
        raise DerError("time form")
    if not value[:14].isdigit():
        raise DerError("time digits")
    return datetime(
        int(value[0:4]),
        int(value[4:6]),
        int(value[6:8]),
        int(value[8:10]),
        int(value[10:12]),
        int(value[12:14]),
        tzinfo=UTC,
    )


def _attributes(buf: bytes, start: int, end: int) -> tuple[bytes | None, datetime | None]:
    digest = signed_at = None
    pos = start
    while pos < end:
        attr_start, attr_end = _expect(buf, pos, end, 0x30)
        oid_start, oid_end = _expect(buf, attr_start, attr_end, 0x06)
        set_start, set_end = _expect(buf, oid_end, attr_end, 0x31)
        oid = buf[oid_start:oid_end]
        if oid == OID_MESSAGE_DIGEST:
            value_start, value_end = _expect(buf, set_start, set_end, 0x04)
            digest = buf[value_start:value_end]
        elif oid == OID_SIGNING_TIME:
            tag, value_start, value_end = _tlv(buf, set_start, set_end)
            signed_at = _time(tag, buf[value_start:value_end])
        pos = attr_end
    return digest, signed_at


def read_der(der: bytes) -> SignedParts:
    end = len(der)
    start, stop = _expect(der, 0, end, 0x30)  # ContentInfo
    oid_start, oid_end = _expect(der, start, stop, 0x06)
    if der[oid_start:oid_end] != OID_SIGNED_DATA:
        raise DerError("not SignedData")
    explicit_start, explicit_end = _expect(der, oid_end, stop, 0xA0)
    sd_start, sd_end = _expect(der, explicit_start, explicit_end, 0x30)  # SignedData
    pos = _expect(der, sd_start, sd_end, 0x02)[1]  # version
    pos = _expect(der, pos, sd_end, 0x31)[1]  # digestAlgorithms
    pos = _expect(der, pos, sd_end, 0x30)[1]  # encapContentInfo
    certificates: list[bytes] = []
    tag, inner_start, inner_end = _tlv(der, pos, sd_end)
    if tag == 0xA0:  # certificates [0] IMPLICIT
        cert_pos = inner_start
        while cert_pos < inner_end:
            cert_tag, _, cert_end = _tlv(der, cert_pos, inner_end)
            if cert_tag == 0x30:
                certificates.append(der[cert_pos:cert_end])
            cert_pos = cert_end
        pos = inner_end
        tag, inner_start, inner_end = _tlv(der, pos, sd_end)
    if tag == 0xA1:  # crls [1] IMPLICIT
        pos = inner_end
        tag, inner_start, inner_end = _tlv(der, pos, sd_end)
    if tag != 0x31:
        raise DerError("signerInfos")
    si_start, si_end = _expect(der, inner_start, inner_end, 0x30)
    if si_end != inner_end:
        raise DerError("more than one signer")
    pos = _expect(der, si_start, si_end, 0x02)[1]  # version
    sid_tag, _, sid_end = _tlv(der, pos, si_end)
    if sid_tag not in (0x30, 0x80):
        raise DerError("sid")
    sid = der[pos:sid_end]
    alg_start, alg_end = _expect(der, sid_end, si_end, 0x30)
    oid_start, oid_end = _expect(der, alg_start, alg_end, 0x06)
    digest = DIGEST_OIDS.get(der[oid_start:oid_end])
    pos = alg_end
    tag, attrs_start, attrs_end = _tlv(der, pos, si_end)
    signed_attrs = message_digest = signing_time = None
    if tag == 0xA0:
        signed_attrs = b"\x31" + der[pos + 1 : attrs_end]
        message_digest, signing_time = _attributes(der, attrs_start, attrs_end)
        pos = attrs_end
    sig_alg_start, sig_alg_end = _expect(der, pos, si_end, 0x30)
    sig_oid_start, sig_oid_end = _expect(der, sig_alg_start, sig_alg_end, 0x06)
    pss = der[sig_oid_start:sig_oid_end] == OID_RSASSA_PSS
    sig_start, sig_end = _expect(der, sig_alg_end, si_end, 0x04)
    return SignedParts(
        tuple(certificates),
        sid,
        digest,
        signed_attrs,
        message_digest,
        signing_time,
        pss,
        der[sig_start:sig_end],
    )


def read_asn1crypto(der: bytes) -> SignedParts:
    """The same parts through asn1crypto (handles BER). Raises ValueError and friends on junk."""
    info = cms.ContentInfo.load(der)
    if info["content_type"].native != "signed_data":
        raise ValueError("not SignedData")
    signed = info["content"]
    signers = signed["signer_infos"]
    if len(signers) != 1:
        raise ValueError("exactly one signer is required")
    signer = signers[0]
    certificates = tuple(c.chosen.dump() for c in signed["certificates"] if c.name == "certificate")
    attrs = signer["signed_attrs"]
    message_digest = signing_time = None
    signed_attrs = None
    if len(attrs):
        for attr in attrs:
            kind = attr["type"].native
            if kind == "message_digest":
                message_digest = attr["values"][0].native
            elif kind == "signing_time":
                signing_time = attr["values"][0].native
        signed_attrs = b"\x31" + attrs.dump()[1:]
    digest_name: Any = signer["digest_algorithm"]["algorithm"].native
    return SignedParts(
        certificates,
        signer["sid"].dump(),
        digest_name if digest_name in ("sha1", "sha256", "sha384", "sha512") else None,
        signed_attrs,
        message_digest,
        signing_time,
        signer["signature_algorithm"].signature_algo == "rsassa_pss",
        signer["signature"].native,
    )


def read(der: bytes) -> SignedParts:
    try:
        return read_der(der)
    except (DerError, ValueError, IndexError, UnicodeDecodeError):
        return read_asn1crypto(der)
