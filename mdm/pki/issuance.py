"""Certificate issuance: one entry point for every user/device certificate the service hands out
(iOS identities, SCEP, KES user certificates, `mdm certs issue`).

A ``CertificateSource`` signs; the internal CA is one, enterprise PKI connectors (AD CS, SCEP/EST
to another CA) will be others. ``issue`` records every certificate and emits ``cert_issued`` in
the caller's transaction, whatever the source.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import InvalidArgument, NotFound
from mdm.pki import store
from mdm.pki.ca import CertificateAuthority
from mdm.pki.event_types import CERT_ISSUED, CERT_RENEWED
from mdm.pki.keys import PrivateKey, generate_key
from mdm.pki.tables import CertStatus, CertType, IssuedCertificateRecord


@dataclass(frozen=True)
class CertificateRequest:
    """What to certify. ``public_key`` comes from a CSR; without it a key pair is generated."""

    type: CertType
    common_name: str
    days: int = 365
    user_id: int | None = None
    device_id: int | None = None
    public_key: CertificatePublicKeyTypes | None = None
    emails: tuple[str, ...] = ()
    sans: tuple[str, ...] = ()
    key_type: str = "rsa"
    rsa_bits: int = 2048
    template: str | None = None  # enterprise PKI template name
    renews_serial: str | None = None  # the certificate this one replaces (marked superseded)
    extra: dict[str, str] = field(default_factory=dict)
    uid: str | None = None  # subject UID attribute (the user name), optional
    # The requester's own PKCS#10 (SCEP, KES). A source with ``needs_csr`` gets one built from the
    # generated key when the request has none (an enterprise CA checks the requester's signature).
    csr: x509.CertificateSigningRequest | None = None


@dataclass(frozen=True)
class IssuedIdentity:
    certificate: x509.Certificate
    key: PrivateKey | None
    chain: list[x509.Certificate]
    record: IssuedCertificateRecord

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.certificate.serial_number)


class CertificateSource(Protocol):
    """Signs certificate requests: the internal CA, or an enterprise PKI connector.

    ``sign`` and ``poll`` return the certificate and its chain (issuer first), or raise
    ``mdm.pki.source_errors.CertificatePending`` (the CA holds the request: ``poll`` it later
    with the CA's request id), ``CertificateDenied`` or ``SourceUnavailable``.
    """

    name: str
    # True: ``sign`` needs ``request.csr`` (``issue`` builds one from a generated key).
    needs_csr: bool

    async def sign(self, request: CertificateRequest, public_key: CertificatePublicKeyTypes) -> tuple[
        x509.Certificate, list[x509.Certificate]
    ]:
        ...

    async def poll(self, request_id: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
        """The outcome of a request the CA answered with "pending"."""
        ...

    def trust_anchors(self) -> list[x509.Certificate]:
        """The CA certificates whose client certificates the listeners must accept because this
        source issues them (the internal CA is anchored already: none)."""
        ...


def build_csr(key: PrivateKey, request: CertificateRequest) -> x509.CertificateSigningRequest:
    """A PKCS#10 for a key generated here: subject CN (and UID), the request's e-mail SANs."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, request.common_name)]
    if request.uid:
        attributes.append(x509.NameAttribute(NameOID.USER_ID, request.uid))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    names: list[x509.GeneralName] = [x509.RFC822Name(e) for e in request.emails]
    names += [x509.DNSName(s) for s in request.sans]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


def serial_hex(serial: int) -> str:
    return format(serial, "x")


class InternalCASource:
    name = "internal"
    needs_csr = False

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    async def poll(self, request_id: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
        raise NotFound(f"the internal CA has no pending request {request_id} (it never pends)")

    def trust_anchors(self) -> list[x509.Certificate]:
        return []

    async def sign(
        self, request: CertificateRequest, public_key: CertificatePublicKeyTypes
    ) -> tuple[x509.Certificate, list[x509.Certificate]]:
        cert = await asyncio.to_thread(
            self.ca.issue,
            public_key,
            common_name=request.common_name,
            days=request.days,
            client=request.type in (CertType.MOBILE, CertType.VPN, CertType.MAIL),
            email_protection=request.type == CertType.MAIL,
            server=request.type == CertType.SERVER,
            sans=request.sans,
            emails=request.emails,
            uid=request.uid,
        )
        return cert, self.ca.chain


def check_public_key(public_key: CertificatePublicKeyTypes) -> None:
    """Refuse keys too weak to certify: RSA below 2048 bits, EC curves other than P-256/P-384."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise InvalidArgument(f"RSA key of {public_key.key_size} bits is too weak (at least 2048)")
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise InvalidArgument(f"EC curve {public_key.curve.name} is not accepted (P-256 or P-384)")
        return
    raise InvalidArgument(f"{type(public_key).__name__} keys are not accepted (RSA >= 2048 or EC P-256)")


@dataclass(frozen=True)
class Prepared:
    """A request ready to sign: its public key, and the key pair when it was generated here."""

    request: CertificateRequest
    public_key: CertificatePublicKeyTypes
    key: PrivateKey | None


async def prepare(source: CertificateSource, request: CertificateRequest) -> Prepared:
    """Check the request's public key, or generate a key pair (and a CSR for a source that needs
    one)."""
    key: PrivateKey | None = None
    public_key = request.public_key
    if public_key is not None:
        check_public_key(public_key)
    else:
        key_type: Literal["rsa", "ec"] = "ec" if request.key_type == "ec" else "rsa"
        key = await asyncio.to_thread(generate_key, key_type, request.rsa_bits)
        public_key = key.public_key()
        if source.needs_csr and request.csr is None:
            request = replace(request, csr=await asyncio.to_thread(build_csr, key, request))
    return Prepared(request, public_key, key)


async def sign(
    source: CertificateSource, prepared: Prepared
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """Ask the source; its pending/denied/unavailable answers propagate as they are."""
    try:
        return await source.sign(prepared.request, prepared.public_key)
    except ValueError as exc:  # a name or value the certificate cannot carry
        raise InvalidArgument(f"cannot certify this request: {exc}") from None


async def record_issued(
    session: AsyncSession,
    source_name: str,
    request: CertificateRequest,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    key: PrivateKey | None,
) -> IssuedIdentity:
    """Record a certificate a source issued and emit ``cert_issued`` (``cert_renewed``) in the
    caller's transaction: the same whether it was issued at once or after being pending."""
    record = IssuedCertificateRecord(
        serial=serial_hex(cert.serial_number),
        type=request.type.value,
        subject=cert.subject.rfc4514_string(),
        user_id=request.user_id,
        device_id=request.device_id,
        source=source_name,
        status=CertStatus.VALID.value,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        renews_serial=normalise_serial(request.renews_serial) if request.renews_serial else None,
        pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )
    await store.add_record(session, record)
    if record.renews_serial is not None:
        old = await store.by_serial(session, record.renews_serial)
        if old is not None and old.status == CertStatus.VALID.value:
            old.status = CertStatus.SUPERSEDED.value
        events.emit(
            session, CERT_RENEWED, device_id=request.device_id, user_id=request.user_id, serial=record.serial,
            cert_type=record.type, subject=record.subject, not_after=record.not_after.isoformat(),
            source=source_name, renews_serial=record.renews_serial,
        )
    else:
        events.emit(
            session, CERT_ISSUED, device_id=request.device_id, user_id=request.user_id, serial=record.serial,
            cert_type=record.type, subject=record.subject, not_after=record.not_after.isoformat(),
            source=source_name,
        )
    return IssuedIdentity(cert, key, chain, record)


async def issue(
    session: AsyncSession, source: CertificateSource, request: CertificateRequest
) -> IssuedIdentity:
    """Sign (generating a key pair if the request has no public key), record, emit the event.

    A request with ``renews_serial`` emits ``cert_renewed`` and marks that certificate
    superseded (it stays usable until it expires or is revoked). A source's "pending" answer
    propagates as ``CertificatePending``: callers that can wait use
    ``mdm.pki.requests.request_certificate``, which records it.
    """
    prepared = await prepare(source, request)
    cert, chain = await sign(source, prepared)
    return await record_issued(session, source.name, prepared.request, cert, chain, prepared.key)


def normalise_serial(serial: str) -> str:
    """Lower-case hex without leading zeros or separators (``0A:1B`` -> ``a1b``)."""
    text = serial.strip().lower().replace(":", "")
    if text.startswith("0x"):
        text = text[2:]
    return text.lstrip("0") or "0"


async def get_record(session: AsyncSession, serial: str) -> IssuedCertificateRecord:
    record = await store.by_serial(session, normalise_serial(serial))
    if record is None:
        raise NotFound(f"no certificate with serial {serial}")
    return record
