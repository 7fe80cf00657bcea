"""SCEP protocol: turn a pkiMessage into a CertRep (the approval queue is ``approval_service``).

Every refusal of a well-formed message is a CertRep FAILURE with a failInfo; a message too broken
to answer (no transactionID, not CMS) is ``MalformedMessage`` and the handler answers HTTP 400.
State changes (challenge consumed, transaction row, certificate record, events) happen in one
database transaction, so a failure anywhere leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.exc import IntegrityError

from mdm.core import events
from mdm.core.errors import ServiceError
from mdm.db.engine import Database
from mdm.pki import issuance
from mdm.pki import store as pki_store
from mdm.pki.requests import record_refusal
from mdm.pki.source_errors import CertificateDenied, SourceUnavailable
from mdm.pki.sources import SourceSet
from mdm.pki.tables import CertStatus, IssuedCertificateRecord
from mdm.pki.trust import ClientCertVerifier, IdentityRejected
from mdm.scep import challenges, envelope, messages, store, token_reuse
from mdm.scep.csr import CsrRequest, challenge_of, fingerprint, load_csr
from mdm.scep.envelope import Encryption
from mdm.scep.event_types import SCEP_REQUEST_PENDING
from mdm.scep.issuing import issue_request, sync_with_request
from mdm.scep.protocol import FailInfo, MessageType, PkiStatus, ScepFailure
from mdm.scep.ra import RaCredentials
from mdm.scep.settings import ScepConfig
from mdm.scep.tables import ScepTransaction, TransactionStatus

log = logging.getLogger("mdm.scep")

CAPABILITIES = ("AES", "DES3", "POSTPKIOperation", "Renewal", "SHA-1", "SHA-256", "SHA-512", "SCEPStandard")
_NEEDS_REPLY_ENVELOPE = {
    MessageType.PKCS_REQ,
    MessageType.RENEWAL_REQ,
    MessageType.CERT_POLL,
    MessageType.GET_CERT,
}


@dataclass(frozen=True)
class ScepState:
    """What ``mdm reload`` replaces as one: the settings and the static challenge (the RA
    certificates stay)."""

    settings: ScepConfig
    ra: RaCredentials
    static_secret: str


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


class ScepService:
    """The SCEP server of one process: its database, RA credentials and settings (``state``,
    replaced by ``mdm reload``), the certificate sources it issues through (the rule of ``[scep]
    cert_type`` picks one), and the verifier that accepts the certificate a RenewalReq renews."""

    def __init__(
        self, db: Database, state: ScepState, sources: SourceSet, verifier: ClientCertVerifier,
        poll_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.state = state
        self.sources = sources
        self.verifier = verifier
        self.poll_seconds = poll_seconds
        self.reused = token_reuse.ReuseReports()

    def ca_certificates(self) -> bytes:
        return ca_certificates(self.state)

    async def pki_operation(self, der: bytes) -> bytes:
        """Answer one pkiMessage with a signed CertRep. Raises MalformedMessage for non-messages."""
        return await _pki_operation(self, self.state, der)


# ---- PKIOperation ----------------------------------------------------------------------------
async def _pki_operation(svc: ScepService, state: ScepState, der: bytes) -> bytes:
    msg = messages.parse(der)
    try:
        outcome = await _dispatch(svc, state, msg)
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


async def _dispatch(svc: ScepService, state: ScepState, msg: messages.PkiMessage) -> Outcome:
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
        return await _enroll(svc, state, msg, kind)
    if kind == MessageType.CERT_POLL:
        return await _poll(svc, state, msg)
    if kind == MessageType.GET_CERT:
        return await _get_cert(svc, state, msg)
    if kind == MessageType.GET_CRL:
        raise ScepFailure(FailInfo.BAD_REQUEST, "GetCRL is not supported; use the CRL distribution point")
    raise ScepFailure(FailInfo.BAD_REQUEST, f"messageType {kind.name} is not a request")


async def _open(state: ScepState, msg: messages.PkiMessage) -> tuple[bytes, Encryption]:
    assert msg.content is not None
    return await asyncio.to_thread(envelope.decrypt, msg.content, state.ra.enc_cert, state.ra.enc_key)


# ---- enrollment --------------------------------------------------------------------------------
async def _existing(svc: ScepService, transaction_id: str) -> ScepTransaction | None:
    async with svc.db.session() as session:
        return await store.transaction_by_id(session, transaction_id)


async def _enroll(
    svc: ScepService, state: ScepState, msg: messages.PkiMessage, kind: MessageType
) -> Outcome:
    assert msg.signer is not None
    plaintext, encryption = await _open(state, msg)
    req = load_csr(plaintext, state.settings)
    signer_fp = fingerprint(msg.signer.public_key())
    req = CsrRequest(req.csr, req.common_name, req.key_fingerprint, signer_fp)
    if kind == MessageType.PKCS_REQ and signer_fp != req.key_fingerprint:
        raise ScepFailure(FailInfo.BAD_REQUEST, "PKCSReq must be signed with the key being certified")
    existing = await _existing(svc, msg.transaction_id)
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
        password = challenge_of(req.csr)
        if not password:
            raise ScepFailure(FailInfo.BAD_REQUEST, "the CSR carries no challengePassword")
        async with svc.db.session() as session:
            challenge = await challenges.match(session, password, state.static_secret)
        if challenge is not None and challenge.problem == "used":
            await token_reuse.report(
                svc.db, svc.reused, ("scep", challenge.id), kind="scep_challenge", challenge=challenge.id,
                transaction_id=msg.transaction_id,
            )
        if challenge is None or challenge.problem:
            reason = "unknown" if challenge is None else f"{challenge.problem} (challenge {challenge.id})"
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "challenge password is wrong, used or expired",
                f"challenge password {reason}",
            )
        if challenges.for_agent(challenge.purpose):
            # An agent's enrollment token (KES) is redeemed by its own protocol only.
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "challenge password is wrong, used or expired",
                f"challenge {challenge.id} is an agent enrollment token ({challenge.purpose})",
            )
        user_id = challenge.user_id
    else:
        record = await _renewable(svc, msg.signer)
        user_id, device_id, renews = record.user_id, record.device_id, record.serial

    try:
        async with svc.db.transaction() as session:
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
            await store.add_transaction(session, row)
            if state.settings.manual_approval:
                events.emit(
                    session,
                    SCEP_REQUEST_PENDING,
                    user_id=user_id,
                    request_id=row.id,
                    transaction_id=row.transaction_id,
                    subject=row.subject,
                )
                return Outcome(PkiStatus.PENDING)
            try:
                cert = await issue_request(
                    session, svc.sources, state.settings, row, req.csr, device_id=device_id,
                    poll_seconds=svc.poll_seconds,
                )
            except (CertificateDenied, SourceUnavailable):
                raise  # recorded below, after the rollback (challenge and transaction not used up)
            except ServiceError as exc:  # refused by the issuance rules
                raise ScepFailure(FailInfo.BAD_REQUEST, exc.message) from None
            if cert is None:  # the enterprise CA holds the request: the client polls
                return Outcome(PkiStatus.PENDING)
    except (CertificateDenied, SourceUnavailable) as exc:
        await record_refusal(svc.db, exc)
        raise ScepFailure(FailInfo.BAD_REQUEST, exc.message) from None
    except IntegrityError:
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "transactionID is already in use",
            f"concurrent request with transaction {msg.transaction_id}",
        ) from None
    return Outcome(PkiStatus.SUCCESS, certificate=cert, encryption=encryption)


async def _renewable(svc: ScepService, signer: x509.Certificate) -> IssuedCertificateRecord:
    """RenewalReq: the signer must be a valid certificate we issued."""
    try:
        verified = svc.verifier.verify(signer)
    except IdentityRejected as exc:
        raise ScepFailure(
            FailInfo.BAD_CERT_ID, "the certificate being renewed is not valid here", exc.message
        ) from None
    async with svc.db.session() as session:
        record = await pki_store.by_serial(session, verified.serial_hex)
    if record is None or record.status not in (CertStatus.VALID, CertStatus.SUPERSEDED):
        raise ScepFailure(
            FailInfo.BAD_CERT_ID,
            "the certificate being renewed is not valid here",
            f"certificate {verified.serial_hex} is {'unknown' if record is None else record.status}",
        )
    return record


# ---- polling and GetCert --------------------------------------------------------------------------
async def _certificate(svc: ScepService, serial: str) -> x509.Certificate | None:
    async with svc.db.session() as session:
        pem = await pki_store.pem_of(session, serial)
    return x509.load_pem_x509_certificate(pem.encode()) if pem else None


async def _poll(svc: ScepService, state: ScepState, msg: messages.PkiMessage) -> Outcome:
    assert msg.signer is not None
    _, encryption = await _open(state, msg)
    row = await _existing(svc, msg.transaction_id)
    if row is None:
        raise ScepFailure(FailInfo.BAD_CERT_ID, f"no request with transaction {msg.transaction_id}")
    if fingerprint(msg.signer.public_key()) not in (row.key_fingerprint, row.signer_fingerprint):
        raise ScepFailure(FailInfo.BAD_REQUEST, "the poll is not signed by the requester's key")
    refusal = None
    if row.status == TransactionStatus.PENDING:
        async with svc.db.transaction() as session:  # held by an enterprise CA: decided meanwhile?
            locked = await store.transaction_by_id(session, msg.transaction_id)
            if locked is not None:
                refusal = await sync_with_request(session, locked)
                row = locked
    if row.status == TransactionStatus.PENDING:
        return Outcome(PkiStatus.PENDING)
    if row.status == TransactionStatus.REJECTED:
        raise ScepFailure(FailInfo.BAD_REQUEST, refusal or "the request was rejected by an administrator")
    cert = await _certificate(svc, row.cert_serial or "")
    if cert is None:
        raise ScepFailure(FailInfo.BAD_CERT_ID, "the issued certificate is no longer on record")
    return Outcome(PkiStatus.SUCCESS, certificate=cert, encryption=encryption)


async def _get_cert(svc: ScepService, state: ScepState, msg: messages.PkiMessage) -> Outcome:
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
    cert = await _certificate(svc, issuance.serial_hex(serial))
    if cert is None:
        raise ScepFailure(FailInfo.BAD_CERT_ID, f"no certificate with serial {serial:x}")
    return Outcome(PkiStatus.SUCCESS, certificate=cert, encryption=encryption)
