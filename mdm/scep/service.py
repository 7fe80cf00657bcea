"""SCEP server logic: turn a pkiMessage into a CertRep, and approve/reject pending requests.

Every refusal of a well-formed message is a CertRep FAILURE with a failInfo; a message too broken
to answer (no transactionID, not CMS) is ``MalformedMessage`` and the handler answers HTTP 400.
State changes (challenge consumed, transaction row, certificate record, events) happen in one
database transaction, so a failure anywhere leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AttributeOID, NameOID
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import Conflict, NotFound, ServiceError
from mdm.db.models import Severity
from mdm.pki import issuance
from mdm.pki import services as pki_plugin
from mdm.pki.tables import CertStatus, CertType, IssuedCertificateRecord
from mdm.pki.trust import IdentityRejected
from mdm.scep import challenges, envelope, messages
from mdm.scep.envelope import Encryption
from mdm.scep.protocol import FailInfo, MessageType, PkiStatus, ScepFailure
from mdm.scep.ra import RaCredentials
from mdm.scep.settings import ScepConfig
from mdm.scep.tables import ScepTransaction, TransactionStatus
from mdm.server.context import ServerContext, ServiceKey

log = logging.getLogger("mdm.scep")

SERVICE_KEY: ServiceKey[ScepState] = ServiceKey("scep.state")
CAPABILITIES = ("AES", "DES3", "POSTPKIOperation", "Renewal", "SHA-1", "SHA-256", "SHA-512", "SCEPStandard")
_NEEDS_REPLY_ENVELOPE = {
    MessageType.PKCS_REQ,
    MessageType.RENEWAL_REQ,
    MessageType.CERT_POLL,
    MessageType.GET_CERT,
}


@dataclass(frozen=True)
class ScepState:
    settings: ScepConfig
    ra: RaCredentials
    static_secret: str


def state_of(ctx: ServerContext) -> ScepState:
    return ctx.services[SERVICE_KEY]


@dataclass(frozen=True)
class Outcome:
    status: PkiStatus
    failure: ScepFailure | None = None
    certificate: x509.Certificate | None = None
    encryption: Encryption = "aes256"


def capabilities() -> str:
    return "\n".join(CAPABILITIES) + "\n"


def ca_certificates(state: ScepState) -> bytes:
    return messages.degenerate(state.ra.getcacert)


def fingerprint(public_key: CertificatePublicKeyTypes) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# ---- PKIOperation ----------------------------------------------------------------------------
async def pki_operation(ctx: ServerContext, der: bytes) -> bytes:
    """Answer one pkiMessage with a signed CertRep. Raises MalformedMessage for non-messages."""
    state = state_of(ctx)
    msg = messages.parse(der)
    try:
        outcome = await _dispatch(ctx, state, msg)
    except ScepFailure as failure:
        outcome = Outcome(PkiStatus.FAILURE, failure=failure)
    kind = _type_name(msg.message_type)
    if outcome.failure is not None:
        log.info(
            "scep %s transaction %s refused: %s (failInfo %s)",
            kind,
            msg.transaction_id,
            outcome.failure.detail,
            outcome.failure.fail_info.name,
            extra={"transaction_id": msg.transaction_id, "fail_info": outcome.failure.fail_info.name},
        )
    else:
        log.info(
            "scep %s transaction %s: %s (%s, %s)",
            kind,
            msg.transaction_id,
            outcome.status.name,
            msg.digest_algorithm,
            outcome.encryption if outcome.status == PkiStatus.SUCCESS else "no envelope",
            extra={"transaction_id": msg.transaction_id},
        )
    return await asyncio.to_thread(_reply, state, msg, outcome)


def _type_name(value: str) -> str:
    try:
        return MessageType(value).name
    except ValueError:
        return f"messageType {value!r}"


def _reply(state: ScepState, msg: messages.PkiMessage, outcome: Outcome) -> bytes:
    digest = msg.digest_algorithm if msg.digest_algorithm in messages.DIGESTS else "sha256"
    sealed = None
    if outcome.status == PkiStatus.SUCCESS:
        assert outcome.certificate is not None and msg.signer is not None
        sealed = envelope.encrypt(messages.degenerate([outcome.certificate]), msg.signer, outcome.encryption)
    failure = outcome.failure
    return messages.cert_rep(
        transaction_id=msg.transaction_id,
        recipient_nonce=msg.sender_nonce,
        status=outcome.status,
        signer_cert=state.ra.sign_cert,
        signer_key=state.ra.sign_key,
        digest=digest,
        envelope=sealed,
        fail_info=failure.fail_info if failure else None,
        fail_info_text=failure.text if failure else None,
    )


async def _dispatch(ctx: ServerContext, state: ScepState, msg: messages.PkiMessage) -> Outcome:
    msg.verify()
    skew = state.settings.max_clock_skew_seconds
    if skew and msg.signing_time is not None:
        off = abs((datetime.now(UTC) - msg.signing_time).total_seconds())
        if off > skew:
            raise ScepFailure(
                FailInfo.BAD_TIME,
                "signingTime is too far from the server's clock",
                f"signingTime {msg.signing_time.isoformat()} is {off:.0f}s off",
            )
    try:
        kind = MessageType(msg.message_type)
    except ValueError:
        raise ScepFailure(FailInfo.BAD_REQUEST, f"unknown messageType {msg.message_type!r}") from None
    assert msg.signer is not None  # verify() passed
    if kind in _NEEDS_REPLY_ENVELOPE and not isinstance(msg.signer.public_key(), rsa.RSAPublicKey):
        raise ScepFailure(
            FailInfo.BAD_ALG, "the signer certificate must hold an RSA key (the reply is encrypted to it)"
        )
    if msg.content is None:
        raise ScepFailure(FailInfo.BAD_REQUEST, "the message carries no pkcsPKIEnvelope")
    if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        return await _enroll(ctx, state, msg, kind)
    if kind == MessageType.CERT_POLL:
        return await _poll(ctx, state, msg)
    if kind == MessageType.GET_CERT:
        return await _get_cert(ctx, state, msg)
    if kind == MessageType.GET_CRL:
        raise ScepFailure(FailInfo.BAD_REQUEST, "GetCRL is not supported; use the CRL distribution point")
    raise ScepFailure(FailInfo.BAD_REQUEST, f"messageType {kind.name} is not a request")


async def _open(state: ScepState, msg: messages.PkiMessage) -> tuple[bytes, Encryption]:
    assert msg.content is not None
    return await asyncio.to_thread(envelope.decrypt, msg.content, state.ra.enc_cert, state.ra.enc_key)


# ---- enrollment --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Request:
    csr: x509.CertificateSigningRequest
    common_name: str
    key_fingerprint: str
    signer_fingerprint: str


def _load_csr(der: bytes, settings: ScepConfig) -> _Request:
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
    return _Request(csr, cn, fingerprint(public_key), "")


def _challenge_of(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def _existing(ctx: ServerContext, transaction_id: str) -> ScepTransaction | None:
    async with ctx.db.session() as session:
        return await session.scalar(
            select(ScepTransaction).where(ScepTransaction.transaction_id == transaction_id)
        )


async def _enroll(
    ctx: ServerContext, state: ScepState, msg: messages.PkiMessage, kind: MessageType
) -> Outcome:
    assert msg.signer is not None
    plaintext, encryption = await _open(state, msg)
    req = _load_csr(plaintext, state.settings)
    signer_fp = fingerprint(msg.signer.public_key())
    req = _Request(req.csr, req.common_name, req.key_fingerprint, signer_fp)
    if kind == MessageType.PKCS_REQ and signer_fp != req.key_fingerprint:
        raise ScepFailure(FailInfo.BAD_REQUEST, "PKCSReq must be signed with the key being certified")
    existing = await _existing(ctx, msg.transaction_id)
    if existing is not None:
        if existing.key_fingerprint != req.key_fingerprint:
            raise ScepFailure(FailInfo.BAD_REQUEST, "transactionID is already in use with another key")
        if existing.status == TransactionStatus.PENDING:
            return Outcome(PkiStatus.PENDING)  # a client re-sending its request while it waits
        raise ScepFailure(
            FailInfo.BAD_REQUEST, f"transaction {msg.transaction_id} is already {existing.status}"
        )

    user_id: int | None = None
    device_id: int | None = None
    renews: str | None = None
    challenge: challenges.ChallengeMatch | None = None
    if kind == MessageType.PKCS_REQ:
        password = _challenge_of(req.csr)
        if not password:
            raise ScepFailure(FailInfo.BAD_REQUEST, "the CSR carries no challengePassword")
        async with ctx.db.session() as session:
            challenge = await challenges.match(session, password, state.static_secret)
        if challenge is None or challenge.problem:
            reason = "unknown" if challenge is None else f"{challenge.problem} (challenge {challenge.id})"
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "challenge password is wrong, used or expired",
                f"challenge password {reason}",
            )
        user_id = challenge.user_id
    else:
        record = await _renewable(ctx, msg.signer)
        user_id, device_id, renews = record.user_id, record.device_id, record.serial

    try:
        async with ctx.db.transaction() as session:
            # The first statement writes, so SQLite takes its write lock before any read.
            if (
                challenge is not None
                and challenge.id is not None
                and not await challenges.consume(session, challenge.id)
            ):
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "challenge password is wrong, used or expired",
                    f"challenge {challenge.id} was used or expired concurrently",
                )
            row = ScepTransaction(
                transaction_id=msg.transaction_id,
                message_type=kind.name,
                status=TransactionStatus.PENDING.value,
                key_fingerprint=req.key_fingerprint,
                signer_fingerprint=req.signer_fingerprint,
                subject=req.csr.subject.rfc4514_string(),
                csr=req.csr.public_bytes(serialization.Encoding.DER),
                user_id=user_id,
                challenge_id=challenge.id if challenge else None,
                renews_serial=renews,
            )
            session.add(row)
            await session.flush()
            if state.settings.manual_approval:
                events.emit(
                    session,
                    "scep_request_pending",
                    Severity.INFO,
                    user_id=user_id,
                    request_id=row.id,
                    transaction_id=row.transaction_id,
                    subject=row.subject,
                )
                return Outcome(PkiStatus.PENDING)
            try:
                cert = await _issue(ctx, state, session, row, req.csr, device_id=device_id)
            except ServiceError as exc:  # refused by the issuance rules or the certificate source
                raise ScepFailure(FailInfo.BAD_REQUEST, exc.message) from None
    except IntegrityError:
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "transactionID is already in use",
            f"concurrent request with transaction {msg.transaction_id}",
        ) from None
    return Outcome(PkiStatus.SUCCESS, certificate=cert, encryption=encryption)


async def _renewable(ctx: ServerContext, signer: x509.Certificate) -> IssuedCertificateRecord:
    """RenewalReq: the signer must be a valid certificate we issued."""
    try:
        verified = pki_plugin.verifier(ctx).verify(signer)
    except IdentityRejected as exc:
        raise ScepFailure(
            FailInfo.BAD_CERT_ID, "the certificate being renewed is not valid here", exc.message
        ) from None
    async with ctx.db.session() as session:
        record = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == verified.serial_hex)
        )
    if record is None or record.status not in (CertStatus.VALID, CertStatus.SUPERSEDED):
        raise ScepFailure(
            FailInfo.BAD_CERT_ID,
            "the certificate being renewed is not valid here",
            f"certificate {verified.serial_hex} is {'unknown' if record is None else record.status}",
        )
    return record


async def _issue(
    ctx: ServerContext,
    state: ScepState,
    session: AsyncSession,
    row: ScepTransaction,
    csr: x509.CertificateSigningRequest,
    *,
    device_id: int | None = None,
) -> x509.Certificate:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    fields: dict[str, Any] = {
        "type": CertType(state.settings.cert_type),
        "common_name": str(names[0].value).strip(),
        "public_key": csr.public_key(),
        "user_id": row.user_id,
        "device_id": device_id,
        "renews_serial": row.renews_serial,
    }
    if state.settings.validity_days:
        fields["days"] = state.settings.validity_days
    identity = await issuance.issue(session, pki_plugin.source(ctx), issuance.CertificateRequest(**fields))
    row.status = TransactionStatus.ISSUED.value
    row.cert_serial = identity.serial_hex
    return identity.certificate


# ---- polling and GetCert --------------------------------------------------------------------------
async def _certificate(ctx: ServerContext, serial: str) -> x509.Certificate | None:
    async with ctx.db.session() as session:
        pem = await session.scalar(
            select(IssuedCertificateRecord.pem).where(IssuedCertificateRecord.serial == serial)
        )
    return x509.load_pem_x509_certificate(pem.encode()) if pem else None


async def _poll(ctx: ServerContext, state: ScepState, msg: messages.PkiMessage) -> Outcome:
    assert msg.signer is not None
    _, encryption = await _open(state, msg)
    row = await _existing(ctx, msg.transaction_id)
    if row is None:
        raise ScepFailure(FailInfo.BAD_CERT_ID, f"no request with transaction {msg.transaction_id}")
    if fingerprint(msg.signer.public_key()) not in (row.key_fingerprint, row.signer_fingerprint):
        raise ScepFailure(FailInfo.BAD_REQUEST, "the poll is not signed by the requester's key")
    if row.status == TransactionStatus.PENDING:
        return Outcome(PkiStatus.PENDING)
    if row.status == TransactionStatus.REJECTED:
        raise ScepFailure(FailInfo.BAD_REQUEST, "the request was rejected by an administrator")
    cert = await _certificate(ctx, row.cert_serial or "")
    if cert is None:
        raise ScepFailure(FailInfo.BAD_CERT_ID, "the issued certificate is no longer on record")
    return Outcome(PkiStatus.SUCCESS, certificate=cert, encryption=encryption)


async def _get_cert(ctx: ServerContext, state: ScepState, msg: messages.PkiMessage) -> Outcome:
    plaintext, encryption = await _open(state, msg)
    try:
        ias = cms.IssuerAndSerialNumber.load(plaintext)
        issuer_der, serial = ias["issuer"].dump(), int(ias["serial_number"].native)
    except (ValueError, TypeError, KeyError) as exc:
        raise ScepFailure(
            FailInfo.BAD_REQUEST, "GetCert content is not IssuerAndSerialNumber", str(exc)
        ) from None
    if issuer_der != state.ra.ca_chain[0].subject.public_bytes():
        raise ScepFailure(FailInfo.BAD_CERT_ID, "the issuer is not this CA")
    cert = await _certificate(ctx, issuance.serial_hex(serial))
    if cert is None:
        raise ScepFailure(FailInfo.BAD_CERT_ID, f"no certificate with serial {serial:x}")
    return Outcome(PkiStatus.SUCCESS, certificate=cert, encryption=encryption)


# ---- administration ---------------------------------------------------------------------------------
async def list_requests(ctx: ServerContext, *, status: str | None, limit: int) -> list[ScepTransaction]:
    async with ctx.db.session() as session:
        stmt = select(ScepTransaction).order_by(ScepTransaction.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(ScepTransaction.status == status)
        return list((await session.scalars(stmt)).all())


async def _decide(
    session: AsyncSession, request_id: int, status: TransactionStatus, by: str
) -> ScepTransaction:
    result = await session.execute(
        update(ScepTransaction)
        .where(ScepTransaction.id == request_id, ScepTransaction.status == TransactionStatus.PENDING.value)
        .values(status=status.value, decided_at=datetime.now(UTC), decided_by=by)
    )
    assert isinstance(result, CursorResult)
    row = await session.get(ScepTransaction, request_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no SCEP request {request_id}")
    if result.rowcount != 1:
        raise Conflict(f"SCEP request {request_id} is {row.status}, not pending", current_status=row.status)
    return row


async def approve(ctx: ServerContext, request_id: int, *, by: str) -> ScepTransaction:
    """Issue the certificate of a pending request; the device gets it on its next poll."""
    state = state_of(ctx)
    async with ctx.db.transaction() as session:
        row = await _decide(session, request_id, TransactionStatus.ISSUED, by)
        csr = x509.load_der_x509_csr(row.csr)
        device_id = None
        if row.renews_serial:
            device_id = await session.scalar(
                select(IssuedCertificateRecord.device_id).where(
                    IssuedCertificateRecord.serial == row.renews_serial
                )
            )
        await _issue(ctx, state, session, row, csr, device_id=device_id)
        events.emit(
            session,
            "scep_request_approved",
            user_id=row.user_id,
            request_id=row.id,
            transaction_id=row.transaction_id,
            serial=row.cert_serial,
            by=by,
        )
    log.info("scep request %d approved by %s", request_id, by)
    return row


async def reject(ctx: ServerContext, request_id: int, *, by: str) -> ScepTransaction:
    async with ctx.db.transaction() as session:
        row = await _decide(session, request_id, TransactionStatus.REJECTED, by)
        events.emit(
            session,
            "scep_request_rejected",
            Severity.WARNING,
            user_id=row.user_id,
            request_id=row.id,
            transaction_id=row.transaction_id,
            by=by,
        )
    log.info("scep request %d rejected by %s", request_id, by)
    return row
