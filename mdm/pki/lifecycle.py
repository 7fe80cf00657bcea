"""Certificate life cycle as service functions on the caller's session: issue per the type's
rule, list, show, revoke. The caller commits; events go into the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import Conflict, InvalidArgument, NotFound
from mdm.db.models import User
from mdm.pki import rules, store
from mdm.pki.crl import RevokedEntry, parse_reason
from mdm.pki.event_types import CERT_REVOKED
from mdm.pki.issuance import get_record
from mdm.pki.request_keys import RequestKeys
from mdm.pki.requests import Outcome, request_certificate
from mdm.pki.sources import SourceSet
from mdm.pki.tables import CertStatus, CertType, IssuedCertificateRecord

MAX_CSR_BYTES = 64 * 1024


def load_csr(pem: str) -> CertificatePublicKeyTypes:
    """The public key of a PEM (or base64 DER) PKCS#10 request whose signature verifies."""
    data = pem.strip().encode()
    if len(data) > MAX_CSR_BYTES:
        raise InvalidArgument("csr: too large for a certificate request")
    try:
        if data.startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            import base64

            csr = x509.load_der_x509_csr(base64.b64decode(data, validate=True))
    except ValueError as exc:
        raise InvalidArgument(f"csr: not a PKCS#10 certificate request ({exc})") from None
    if not csr.is_signature_valid:
        raise InvalidArgument("csr: the request's signature does not verify (proof of possession failed)")
    return csr.public_key()


async def resolve_user(
    session: AsyncSession, name: str, *, create: bool = False, email: str | None = None
) -> tuple[User, bool]:
    """The user by name; created only when asked (a typo must not mint a new identity)."""
    user = await store.user_by_name(session, name)
    if user is not None:
        return user, False
    if not create:
        raise NotFound(
            f"no user {name!r}; create it first (POST /api/v1/users) or ask to create it (--create-user)"
        )
    return await store.add_user(session, name, email), True


@dataclass
class IssueResult:
    identity: Outcome  # the certificate, or the request the source holds pending
    user: User
    user_created: bool


async def issue_for_user(
    session: AsyncSession,
    sources: SourceSet,
    *,
    user_name: str,
    cert_type: str,
    public_key: CertificatePublicKeyTypes | None = None,
    create_user: bool = False,
    email: str | None = None,
    device_id: int | None = None,
    renews_serial: str | None = None,
    purpose: str = "api",
    keys: RequestKeys | None = None,
    poll_seconds: float = 60.0,
) -> IssueResult:
    """Issue a ``cert_type`` certificate for the user by the type's rule and source (or record
    the request as pending when the source holds it)."""
    kind = rules.rule_type(cert_type)
    user, created = await resolve_user(session, user_name, create=create_user, email=email)
    rule = await rules.get_rule(session, kind)
    address = email or user.email
    if kind == CertType.MAIL and address and not address.isascii():
        raise InvalidArgument(f"e-mail address {address!r}: certificates need an ASCII address")
    if kind == CertType.MAIL and not address:
        raise InvalidArgument(
            f"mail certificates carry the user's e-mail address and user {user.name!r} has none "
            "(give an email)"
        )
    request = rules.request_for(
        rule,
        common_name=user.name,
        user_id=user.id,
        device_id=device_id,
        public_key=public_key,
        emails=(address,) if address and kind == CertType.MAIL else (),
        uid=user.name,
        renews_serial=renews_serial,
    )
    identity = await request_certificate(
        session, sources.get(rule.source), request, purpose=purpose, keys=keys, poll_seconds=poll_seconds
    )
    return IssueResult(identity, user, created)


async def revoke(session: AsyncSession, serial: str, reason: str, *, by: str) -> IssuedCertificateRecord:
    """Mark the certificate revoked and emit ``cert_revoked``; the caller then refreshes the CRL."""
    reason_name = parse_reason(reason)
    record = await get_record(session, serial)
    now = datetime.now(UTC)
    if record.status == CertStatus.REVOKED.value:
        raise Conflict(
            f"certificate {record.serial} is already revoked ({record.revocation_reason}, "
            f"{record.revoked_at or now:%Y-%m-%d %H:%M}Z)"
        )
    if record.status == CertStatus.EXPIRED.value or record.not_after <= now:
        raise Conflict(f"certificate {record.serial} has expired; it no longer needs revoking")
    record.status = CertStatus.REVOKED.value
    record.revoked_at = now
    record.revocation_reason = reason_name
    events.emit(
        session,
        CERT_REVOKED,
        device_id=record.device_id,
        user_id=record.user_id,
        serial=record.serial,
        cert_type=record.type,
        subject=record.subject,
        reason=reason_name,
        by=by,
    )
    return record


async def revoked_entries(
    session: AsyncSession, now: datetime | None = None, source: str | None = None
) -> list[RevokedEntry]:
    """Revoked certificates that have not expired yet (expired ones drop off the CRL); of one
    certificate source when given (the internal CRL lists only what the internal CA issued)."""
    now = now or datetime.now(UTC)
    return [
        RevokedEntry(serial=serial, revoked_at=revoked_at or now, reason=reason, not_after=not_after)
        for serial, revoked_at, reason, not_after in await store.revoked_unexpired(session, now, source)
    ]


async def revocation_marker(session: AsyncSession, now: datetime) -> tuple[int, str | None]:
    """A cheap summary of the revoked set (count, latest revocation): if it has not moved, the
    set has not changed (revocation is permanent), so the full list need not be read."""
    return await store.revocation_marker(session, now)


async def revoked_pems(session: AsyncSession, serials: list[str]) -> dict[str, str]:
    return await store.pems(session, serials)


async def list_certificates(
    session: AsyncSession,
    *,
    limit: int,
    before_id: int | None = None,
    user: str | None = None,
    status: str | None = None,
    cert_type: str | None = None,
    device_id: int | None = None,
) -> tuple[list[tuple[IssuedCertificateRecord, str | None]], int | None]:
    """Newest first, with the owner's name; the cursor is the last id of the page."""
    rows = await store.list_page(
        session, limit=limit, before_id=before_id, user=user, status=status, cert_type=cert_type,
        device_id=device_id,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1][0].id if more and rows else None)


async def owner_name(session: AsyncSession, record: IssuedCertificateRecord) -> str | None:
    if record.user_id is None:
        return None
    return await store.user_name(session, record.user_id)


async def get(session: AsyncSession, serial: str) -> IssuedCertificateRecord:
    try:
        int(serial.replace(":", ""), 16)
    except ValueError:
        raise NotFound(f"no certificate with serial {serial} (serials are hexadecimal)") from None
    return await get_record(session, serial)
