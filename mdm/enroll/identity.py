"""The PKCS#12 identity an enrollment profile carries, issued through the ``mobile`` issuance
rule's source (the internal CA, or an enterprise CA such as AD CS).

The request names the user's account (``uid``: an AD CS source requests on behalf of
``DOMAIN\\user``) and carries a PKCS#10 made with the key generated here when the source wants
one. An enterprise CA may hold the request for a CA manager: the request row
(``certificate_requests``, purpose ``enrollment:<id>``) keeps the key sealed by ``RequestKeys``,
the download answers 503 with ``Retry-After`` and the link stays usable; once the ``pki.requests``
worker has recorded the certificate, the next download builds the PKCS#12 from the stored key and
the issued certificate, and the stored key is dropped in the same transaction. A request the CA
denied keeps the link refused (422, the CA's message) until the administrator makes a new one.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.errors import Conflict, ServiceError
from mdm.db.engine import Database
from mdm.db.models import User, utcnow
from mdm.enroll.seams import Env, IssuedCredential
from mdm.enroll.tables import Enrollment
from mdm.pki import issuance, rules, store_requests
from mdm.pki.keys import PrivateKey, generate_key
from mdm.pki.requests import PendingCertificate, request_certificate
from mdm.pki.tables import CertificateRequestRecord, CertType, RequestStatus

PURPOSE = "enrollment:"
RETRY_AFTER_SECONDS = 300  # what a pending download tells the device to wait


class IdentityPending(ServiceError):
    """The CA holds the identity's certificate request: the link stays usable."""

    status = 503
    code = "certificate_pending"

    def __init__(self, request_id: int, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(
            f"certificate request {request_id} is pending approval at the CA; try again later",
            request_id=request_id,
        )
        self.retry_after = retry_after


class IdentityDenied(ServiceError):
    """The CA denied the identity's certificate request after holding it."""

    status = 422
    code = "certificate_denied"


def purpose_of(enrollment_id: int) -> str:
    return f"{PURPOSE}{enrollment_id}"


async def new_key(env: Env) -> PrivateKey:
    """A key pair for the identity (``[pki] key_type``, at least ``[enroll] identity_key_bits``),
    made in a worker thread."""
    pki = env.config.pki
    bits = max(pki.rsa_bits, env.settings.identity_key_bits)
    return await asyncio.to_thread(generate_key, "ec" if pki.key_type == "ec" else "rsa", bits)


def _refuse_undecided(row: CertificateRequestRecord) -> None:
    if row.status == RequestStatus.PENDING.value:
        raise IdentityPending(row.id)
    if row.status == RequestStatus.DENIED.value:
        said = f": {row.message}" if row.message else ""
        raise IdentityDenied(
            f"certificate request {row.id} for this enrollment was denied by the CA ({row.source}){said}; "
            "ask your administrator for a new enrollment link",
            request_id=row.id,
        )


def _waiting(row: CertificateRequestRecord) -> bool:
    """Issued after being pending, its key still stored: the next download hands it out."""
    return row.status == RequestStatus.ISSUED.value and bool(row.serial) and row.encrypted_key is not None


async def stored_identity_waits(db: Database, enrollment_id: int) -> bool:
    """Before a key pair is made for a download: IdentityPending / IdentityDenied while the CA
    holds or has refused the request; True when its certificate waits with the stored key."""
    async with db.session() as session:
        row = await store_requests.latest_for_purpose(session, purpose_of(enrollment_id))
    if row is None:
        return False
    _refuse_undecided(row)
    return _waiting(row)


async def issue_identity(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, key: PrivateKey | None,
) -> IssuedCredential | PendingCertificate:
    """The identity in ``session``: from an earlier request now issued, or requested now (issued
    at once, or pending with ``key`` sealed in the request row). Sets ``enrollment.cert_serial``
    once there is a certificate. Denials and an unavailable source propagate."""
    earlier = await store_requests.latest_for_purpose(session, purpose_of(enrollment.id))
    if earlier is not None:
        locked = await store_requests.get_for_update(session, earlier.id)
        assert locked is not None
        _refuse_undecided(locked)
        if _waiting(locked):
            return await _from_request(env, session, enrollment, locked)
        # cancelled, given up, or issued to no key of ours: ask again
    return await _submit(env, session, enrollment, user, key or await new_key(env))


async def _submit(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, key: PrivateKey,
) -> IssuedCredential | PendingCertificate:
    rule = await rules.get_rule(session, CertType.MOBILE)
    source = env.source_named(rule.source)
    request = replace(
        rules.request_for(
            rule, common_name=f"{user.name} device {enrollment.id}", user_id=user.id,
            public_key=key.public_key(), emails=(enrollment.email,) if enrollment.email else (),
            uid=user.name,
        ),
        days=env.settings.identity_validity_days,
        extra={"enrollment": enrollment.uuid},
    )
    if source.needs_csr:  # the CA checks the requester's signature: the PKCS#10 of our key
        request = replace(request, csr=await asyncio.to_thread(issuance.build_csr, key, request))
    outcome = await request_certificate(
        session, source, request, purpose=purpose_of(enrollment.id), keys=env.keys,
        poll_seconds=env.config.pki.request_poll_seconds,
    )
    if isinstance(outcome, PendingCertificate):
        if env.keys is None:
            raise Conflict(f"{outcome.description}; a profile file needs its certificate now: "
                           "send the enrollment as a link instead")
        row = await store_requests.get(session, outcome.id)
        assert row is not None
        row.encrypted_key = await asyncio.to_thread(env.keys.seal, key)
        return outcome
    enrollment.cert_serial = outcome.serial_hex
    return IssuedCredential(outcome.certificate, key, _intermediates(outcome.certificate, outcome.chain))


async def _from_request(
    env: Env, session: AsyncSession, enrollment: Enrollment, row: CertificateRequestRecord,
) -> IssuedCredential:
    assert row.serial is not None and row.encrypted_key is not None
    if env.keys is None:
        raise Conflict(f"certificate request {row.id} was issued; serve the enrollment link to hand it out")
    record = await issuance.get_record(session, row.serial)
    cert = x509.load_pem_x509_certificate(record.pem.encode())
    key = await asyncio.to_thread(env.keys.open, row.encrypted_key)
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise Conflict(f"certificate {record.serial} of request {row.id} does not match the stored key")
    row.encrypted_key = None  # handed out now: the key lives only in the profile
    row.updated_at = utcnow()
    enrollment.cert_serial = record.serial
    anchors = env.source_named(row.source).trust_anchors()
    return IssuedCredential(cert, key, _intermediates(cert, anchors))


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    der = serialization.Encoding.DER
    return public_key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)


def _intermediates(cert: x509.Certificate, pool: list[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """The chain from ``cert``'s issuer up through ``pool``, without self-signed roots (the
    profile carries roots as their own payloads)."""
    by_subject = {c.subject: c for c in pool}
    chain: list[x509.Certificate] = []
    issuer = by_subject.get(cert.issuer)
    while issuer is not None and issuer.subject != issuer.issuer and issuer not in chain:
        chain.append(issuer)
        issuer = by_subject.get(issuer.issuer)
    return tuple(chain)
