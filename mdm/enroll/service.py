"""Enrollment service: create one-time links (or profile files), serve a link exactly once,
expire and revoke links.

The profile, with the device's private key inside its PKCS#12, is built when the link is
downloaded, not when it is created: no private key or PKCS#12 password is ever stored. The
one-time claim, the certificate record, and the ``enrollment_downloaded`` event commit together;
if building fails the claim rolls back and the link stays usable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.config import Config
from mdm.core import events
from mdm.core.errors import Conflict, Gone, InvalidArgument, NotFound, ServiceError, Unsupported
from mdm.db.engine import Database
from mdm.db.models import Device, Protocol, Severity, User, utcnow
from mdm.enroll import links
from mdm.enroll.config import EnrollConfig, enroll_config, smtp_config
from mdm.enroll.tables import Delivery, Enrollment, EnrollmentStatus
from mdm.enroll.topic import DEVELOPMENT_WARNING, PushTopic, TopicError, read_topic
from mdm.ios import enrollment_profile as ep
from mdm.ios.signing import ProfileSigner, SigningError, sign_profile
from mdm.pki import services as pki_plugin
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateRequest, CertificateSource, issue, serial_hex
from mdm.pki.keys import PrivateKey, generate_key
from mdm.pki.tables import CertType
from mdm.scep.tables import ScepChallenge, ScepTransaction
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.enroll")

PLATFORMS = ("ios", "android")
_USER_RE = re.compile(r"^[^\s/\\\x00-\x1f\x7f]{1,255}$")
_EMAIL_RE = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"


@dataclass(frozen=True)
class Env:
    """What building a profile needs; from the running server or from the CLI."""

    config: Config
    ca: CertificateAuthority
    source: CertificateSource
    bound_ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def settings(self) -> EnrollConfig:
        return enroll_config(self.config)


def env_of(ctx: ServerContext) -> Env:
    return Env(ctx.config, pki_plugin.ca(ctx), pki_plugin.source(ctx), ctx.bound_ports)


@dataclass(frozen=True)
class Prerequisites:
    topic: PushTopic
    signer: ProfileSigner
    warnings: tuple[str, ...] = ()


@dataclass
class Created:
    enrollment: Enrollment
    user: User
    user_created: bool
    token: str | None = None
    url: str | None = None
    profile: bytes | None = None
    warnings: tuple[str, ...] = ()


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---- input --------------------------------------------------------------------------------------
def validate_request(platform: str, user: str, email: str | None) -> tuple[str, str, str | None]:
    if platform not in PLATFORMS:
        raise InvalidArgument(f"unknown platform {platform!r} (allowed: ios, android)", field="platform")
    if platform == "android":
        raise Unsupported(
            "Android enrollment (the KES agent package) is not available yet; only platform \"ios\" "
            "can be enrolled",
            field="platform",
        )
    user = user.strip()
    if not user:
        raise InvalidArgument("user must not be empty", field="user")
    if not _USER_RE.match(user):
        raise InvalidArgument(
            "user must be 1-255 characters without spaces, control characters, '/' or '\\'", field="user"
        )
    if email is not None:
        email = email.strip()
        if not _EMAIL_RE.match(email) or len(email) > 320:
            raise InvalidArgument(f"not an e-mail address: {email!r}", field="email")
    return platform, user, email


def identifier_prefix(config: Config) -> str:
    configured = enroll_config(config).profile_identifier_prefix.strip(".")
    if configured:
        return configured
    host = config.hostname.strip(".").lower()
    try:
        ipaddress.ip_address(host)
        return "mdm"
    except ValueError:
        pass
    return ".".join(reversed(host.split("."))) if "." in host else host or "mdm"


def check_prerequisites(env: Env) -> Prerequisites:
    """The APNs topic and the signing identity, or a 409 naming what to configure. Reads files:
    call through ``asyncio.to_thread``."""
    try:
        topic = read_topic(env.config)
    except TopicError as exc:
        raise Conflict(str(exc), field="apns.certificate_file") from None
    try:
        signer = ProfileSigner.from_slot(env.config.certs_dir)
    except SigningError as exc:
        raise Conflict(f"cannot sign enrollment profiles: {exc}", slot="ios") from None
    if env.settings.identity == "scep":
        try:
            from mdm.scep import challenges  # noqa: F401
        except ImportError:
            raise Conflict(
                "enroll.identity = \"scep\" but this build has no SCEP server; use \"pkcs12\"",
                field="enroll.identity",
            ) from None
    warnings = []
    now = datetime.now(UTC)
    if topic.development:
        warnings.append(DEVELOPMENT_WARNING)
    if topic.expired:
        warnings.append(
            f"the APNs certificate expired on {topic.not_after:%Y-%m-%d}: devices will enroll but "
            "cannot be woken by push until it is renewed"
        )
    if signer.certificate.not_valid_after_utc <= now:
        warnings.append(
            "the 'ios' signing certificate has expired: devices will show the profile as unverified"
        )
    return Prerequisites(topic, signer, tuple(warnings))


# ---- users --------------------------------------------------------------------------------------
async def get_or_create_user(session: AsyncSession, name: str, email: str | None) -> tuple[User, bool]:
    """Enrolling an unknown user creates the user (with the e-mail address, if given)."""
    user = await session.scalar(select(User).where(User.name == name))
    if user is not None:
        if email and not user.email:
            user.email = email
        return user, False
    user = User(name=name, email=email)
    session.add(user)
    await session.flush()
    return user, True


# ---- building -----------------------------------------------------------------------------------
def _new_enrollment(env: Env, user: User, email: str | None, delivery: Delivery, created_by: str | None,
                    topic: str) -> Enrollment:
    enrollment_uuid = str(uuid.uuid4())
    now = utcnow()
    return Enrollment(
        uuid=enrollment_uuid,
        platform="ios",
        user_id=user.id,
        email=email,
        delivery=delivery.value,
        status=(EnrollmentStatus.PENDING if delivery is Delivery.LINK else EnrollmentStatus.DELIVERED).value,
        identity=env.settings.identity,
        created_at=now,
        created_by=created_by,
        expires_at=(
            now + timedelta(seconds=env.settings.link_ttl_seconds) if delivery is Delivery.LINK else now
        ),
        downloaded_at=None if delivery is Delivery.LINK else now,
        mdm_profile_identifier=f"{identifier_prefix(env.config)}.enrollment.{enrollment_uuid}",
        topic=topic,
    )


async def _generate_identity_key(env: Env) -> PrivateKey | None:
    if env.settings.identity != "pkcs12":
        return None
    pki = env.config.pki
    bits = max(pki.rsa_bits, env.settings.identity_key_bits)
    return await asyncio.to_thread(generate_key, "ec" if pki.key_type == "ec" else "rsa", bits)


def _sign(spec: ep.EnrollmentProfileSpec, signer: ProfileSigner) -> bytes:
    return sign_profile(ep.build_bytes(spec), signer)


async def _identity(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, key: PrivateKey | None
) -> ep.Pkcs12Identity | ep.ScepIdentity:
    settings = env.settings
    if settings.identity == "scep":
        from mdm.scep.challenges import create_challenge

        challenge = await create_challenge(
            session, user_id=user.id, purpose=f"ios-enrollment:{enrollment.id}",
            ttl_seconds=settings.scep_challenge_ttl_seconds,
        )
        return ep.ScepIdentity(
            url=links.scep_url(env.config, env.bound_ports),
            challenge=challenge,
            subject=(("O", settings.organization), ("CN", f"{user.name} device {enrollment.id}")),
            key_size=settings.identity_key_bits,
        )
    assert key is not None
    issued = await issue(
        session,
        env.source,
        CertificateRequest(
            type=CertType.MOBILE,
            common_name=f"{user.name} device {enrollment.id}",
            days=settings.identity_validity_days,
            user_id=user.id,
            public_key=key.public_key(),
            emails=(enrollment.email,) if enrollment.email else (),
            extra={"enrollment": enrollment.uuid},
        ),
    )
    enrollment.cert_serial = issued.serial_hex
    chain = tuple(c for c in issued.chain if c.subject != c.issuer)  # the root comes as its own payload
    return ep.Pkcs12Identity(
        certificate=issued.certificate,
        key=key,
        chain=chain,
        password=secrets.token_urlsafe(18),
        encryption=settings.pkcs12_encryption,
        friendly_name=f"{user.name} MDM identity",
    )


async def build_signed_profile(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, prereq: Prerequisites,
    key: PrivateKey | None,
) -> bytes:
    """Issue the identity in ``session`` (records + event) and return the signed profile."""
    identity = await _identity(env, session, enrollment, user, key)
    spec = ep.EnrollmentProfileSpec(
        identifier=enrollment.mdm_profile_identifier,
        profile_uuid=enrollment.uuid.upper(),
        organization=env.settings.organization,
        server_url=links.server_url(env.config, env.bound_ports),
        checkin_url=links.checkin_url(env.config, env.bound_ports),
        topic=prereq.topic.topic,
        identity=identity,
        root_certificates=_roots(env.ca),
        access_rights=env.settings.access_rights,
        per_user_connections=env.settings.per_user_connections,
    )
    return await asyncio.to_thread(_sign, spec, prereq.signer)


def _roots(ca: CertificateAuthority) -> list[x509.Certificate]:
    return [ca.root]


def _event_body(enrollment: Enrollment, user: User) -> dict[str, Any]:
    return {
        "enrollment_id": enrollment.id,
        "user": user.name,
        "platform": enrollment.platform,
        "delivery": enrollment.delivery,
        "identity": enrollment.identity,
        "mdm_profile_identifier": enrollment.mdm_profile_identifier,
        "for_device_id": enrollment.for_device_id,
    }


async def _target_device(session: AsyncSession, device_id: int | None) -> int | None:
    """The device an administrator re-enrolls with this enrollment (its identity may then take
    over that device's binding, whoever owns it)."""
    if device_id is None:
        return None
    protocol = await session.scalar(select(Device.protocol).where(Device.id == device_id))
    if protocol is None:
        raise NotFound(f"no device {device_id}", field="device_id")
    if protocol != Protocol.IOS.value:
        raise InvalidArgument(f"device {device_id} is not an iOS device", field="device_id")
    return device_id


# ---- creation -----------------------------------------------------------------------------------
async def create_link(
    env: Env, session: AsyncSession, prereq: Prerequisites, *, user: str, email: str | None,
    created_by: str | None, for_device_id: int | None = None,
) -> Created:
    """Record a pending one-time link; the clear token exists only in the returned value."""
    if email and not smtp_config(env.config).host:
        raise Conflict(
            "an e-mail address was given but e-mail delivery is not configured (set smtp.host and "
            "smtp.from), or enroll without an e-mail address and hand out the URL / QR code",
            field="email",
        )
    target = await _target_device(session, for_device_id)
    owner, user_created = await get_or_create_user(session, user, email)
    enrollment = _new_enrollment(env, owner, email, Delivery.LINK, created_by, prereq.topic.topic)
    enrollment.for_device_id = target
    token = links.new_token()
    enrollment.token_hash = links.token_hash(token)
    session.add(enrollment)
    await session.flush()
    events.emit(
        session, "enrollment_created", user_id=owner.id, expires_at=as_utc(enrollment.expires_at).isoformat(),
        user_created=user_created, email=email, **_event_body(enrollment, owner),
    )
    return Created(
        enrollment, owner, user_created, token=token, url=links.link_url(env.config, token, env.bound_ports),
        warnings=prereq.warnings,
    )


async def create_file(
    env: Env, session: AsyncSession, prereq: Prerequisites, *, user: str, created_by: str | None
) -> Created:
    """Build the signed profile now (for Apple Configurator). The caller writes the file before
    the transaction commits, so a failed write leaves no enrollment and no certificate."""
    key = await _generate_identity_key(env)
    owner, user_created = await get_or_create_user(session, user, None)
    enrollment = _new_enrollment(env, owner, None, Delivery.FILE, created_by, prereq.topic.topic)
    session.add(enrollment)
    await session.flush()
    profile = await build_signed_profile(env, session, enrollment, owner, prereq, key)
    events.emit(
        session, "enrollment_created", user_id=owner.id, user_created=user_created,
        cert_serial=enrollment.cert_serial, **_event_body(enrollment, owner),
    )
    return Created(enrollment, owner, user_created, profile=profile, warnings=prereq.warnings)


async def create_with_retry(
    env: Env, db: Database, *, platform: str, user: str, email: str | None, created_by: str | None,
    for_device_id: int | None = None,
) -> Created:
    """Validate, check prerequisites, create the link in one transaction (retried once if a
    concurrent request created the same user first)."""
    _, user, email = validate_request(platform, user, email)
    prereq = await asyncio.to_thread(check_prerequisites, env)
    for attempt in (1, 2):
        try:
            async with db.transaction() as session:
                return await create_link(
                    env, session, prereq, user=user, email=email, created_by=created_by,
                    for_device_id=for_device_id,
                )
        except IntegrityError:
            if attempt == 2:
                raise Conflict(f"could not create the user {user!r} concurrently; retry") from None
    raise AssertionError("unreachable")


# ---- mail ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MailOutcome:
    to: str
    sent: bool
    error: str | None = None


async def mail_link(env: Env, db: Database, created: Created, qr_png: bytes | None) -> MailOutcome:
    """Send the link; the enrollment stays valid whatever happens, and the outcome is an event."""
    from mdm.enroll.mail import LinkMail, MailError, send

    enrollment, owner = created.enrollment, created.user
    assert enrollment.email and created.url
    try:
        await send(
            smtp_config(env.config),
            LinkMail(enrollment.email, owner.name, created.url, as_utc(enrollment.expires_at), qr_png),
        )
    except MailError as exc:
        log.warning("enrollment %s: mail to %s failed: %s", enrollment.id, enrollment.email, exc)
        async with db.transaction() as session:
            events.emit(
                session, "enrollment_mail_failed", Severity.WARNING, user_id=owner.id,
                enrollment_id=enrollment.id, to=enrollment.email, error=str(exc),
            )
        return MailOutcome(enrollment.email, False, str(exc))
    async with db.transaction() as session:
        row = await session.get(Enrollment, enrollment.id)
        if row is not None:
            row.mailed_at = utcnow()
        events.emit(session, "enrollment_mailed", user_id=owner.id, enrollment_id=enrollment.id,
                    to=enrollment.email)
    return MailOutcome(enrollment.email, True)


# ---- download -----------------------------------------------------------------------------------
class LinkUnknown(NotFound):
    pass


class LinkGone(Gone):
    pass


async def _claim(session: AsyncSession, token_hash: bytes, now: datetime) -> int | None:
    """Atomically take the link: only one transaction can move it out of ``pending``."""
    stmt = (
        update(Enrollment)
        .where(
            Enrollment.token_hash == token_hash,
            Enrollment.status == EnrollmentStatus.PENDING.value,
            Enrollment.downloaded_at.is_(None),
            Enrollment.expires_at > now,
        )
        .values(downloaded_at=now, status=EnrollmentStatus.DOWNLOADED.value)
        .returning(Enrollment.id)
        .execution_options(synchronize_session=False)
    )
    claimed: int | None = (await session.execute(stmt)).scalar_one_or_none()
    return claimed


async def _mark_expired(session: AsyncSession, enrollment_id: int, now: datetime) -> bool:
    stmt = (
        update(Enrollment)
        .where(
            Enrollment.id == enrollment_id,
            Enrollment.status == EnrollmentStatus.PENDING.value,
            Enrollment.expires_at <= now,
        )
        .values(status=EnrollmentStatus.EXPIRED.value)
        .returning(Enrollment.id, Enrollment.user_id, Enrollment.expires_at)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return False
    events.emit(session, "enrollment_expired", user_id=row.user_id, enrollment_id=row.id,
                expires_at=as_utc(row.expires_at).isoformat())
    return True


def _gone_message(status: str) -> str:
    return {
        EnrollmentStatus.DOWNLOADED.value: "this enrollment link has already been used",
        EnrollmentStatus.EXPIRED.value: "this enrollment link has expired",
        EnrollmentStatus.REVOKED.value: "this enrollment link has been revoked",
    }.get(status, "this enrollment link is no longer valid")


async def _pending_link(db: Database, token_hash: bytes) -> int:
    """The id of the pending enrollment behind a link, or LinkUnknown / LinkGone (an expired link
    is marked expired on the way)."""
    now = utcnow()
    async with db.session() as session:
        found = (
            await session.execute(
                select(Enrollment.id, Enrollment.status, Enrollment.expires_at).where(
                    Enrollment.token_hash == token_hash
                )
            )
        ).first()
    if found is None:
        raise LinkUnknown("no such enrollment link")
    if found.status == EnrollmentStatus.PENDING.value and as_utc(found.expires_at) <= now:
        async with db.transaction() as session:
            await _mark_expired(session, found.id, now)
        raise LinkGone(_gone_message(EnrollmentStatus.EXPIRED.value))
    if found.status != EnrollmentStatus.PENDING.value:
        raise LinkGone(_gone_message(found.status))
    return int(found.id)


# Downloads being built in this process, by token hash. Concurrent requests for the same link
# wait for the first instead of each generating a key pair only to lose the claim; across
# processes and replicas the database claim alone decides.
_IN_FLIGHT: dict[bytes, asyncio.Event] = {}


async def download(env: Env, db: Database, token: str, *, peer: str | None = None) -> bytes:
    """Serve a link once: the signed profile, or LinkUnknown (404) / LinkGone (410) /
    Unavailable (503, the link stays valid)."""
    if not links.well_formed(token):
        raise LinkUnknown("no such enrollment link")
    token_hash = links.token_hash(token)
    while True:
        enrollment_id = await _pending_link(db, token_hash)
        running = _IN_FLIGHT.get(token_hash)
        if running is None:
            break
        await running.wait()
    done = _IN_FLIGHT[token_hash] = asyncio.Event()
    try:
        return await _build_download(env, db, token_hash, enrollment_id, peer)
    finally:
        done.set()
        del _IN_FLIGHT[token_hash]


async def _build_download(env: Env, db: Database, token_hash: bytes, enrollment_id: int,
                          peer: str | None) -> bytes:
    try:
        prereq = await asyncio.to_thread(check_prerequisites, env)
    except Conflict as exc:
        await _download_failed(db, enrollment_id, exc.message)
        raise Unavailable(f"the enrollment profile cannot be built right now: {exc.message}") from None
    # The key pair is made before the claim so the claiming transaction stays short (SQLite
    # serialises writers for its whole duration).
    key = await _generate_identity_key(env)
    try:
        async with db.transaction() as session:
            claimed = await _claim(session, token_hash, utcnow())
            if claimed is None:
                raise LinkGone(_gone_message(EnrollmentStatus.DOWNLOADED.value))
            enrollment = await session.get(Enrollment, claimed)
            assert enrollment is not None
            owner = await session.get(User, enrollment.user_id)
            if owner is None:  # the user was deleted: the link went with it (cascade)
                raise LinkUnknown("no such enrollment link")
            profile = await build_signed_profile(env, session, enrollment, owner, prereq, key)
            events.emit(
                session, "enrollment_downloaded", user_id=owner.id, cert_serial=enrollment.cert_serial,
                peer=peer, **_event_body(enrollment, owner),
            )
        return profile
    except ServiceError:
        raise
    except Exception as exc:
        log.exception("enrollment %s: building the profile failed", enrollment_id)
        await _download_failed(db, enrollment_id, f"{type(exc).__name__}: {exc}")
        raise Unavailable("the enrollment profile could not be built; the link is still valid") from None


async def _download_failed(db: Database, enrollment_id: int, reason: str) -> None:
    async with db.transaction() as session:
        events.emit(session, "enrollment_download_failed", Severity.FUNCTIONAL_FAILURE,
                    enrollment_id=enrollment_id, error=reason)


# ---- administration -----------------------------------------------------------------------------
async def expire_due(session: AsyncSession, now: datetime | None = None, limit: int = 500) -> int:
    """Mark pending links past their expiry as expired (one event each); returns how many."""
    now = now or utcnow()
    ids = (
        await session.scalars(
            select(Enrollment.id)
            .where(Enrollment.status == EnrollmentStatus.PENDING.value, Enrollment.expires_at <= now)
            .order_by(Enrollment.id)
            .limit(limit)
        )
    ).all()
    count = 0
    for enrollment_id in ids:
        count += await _mark_expired(session, enrollment_id, now)
    return count


async def get(session: AsyncSession, enrollment_id: int) -> tuple[Enrollment, str]:
    row = (
        await session.execute(
            select(Enrollment, User.name).join(User, User.id == Enrollment.user_id).where(
                Enrollment.id == enrollment_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"no enrollment {enrollment_id}")
    return row[0], row[1]


def _status_is(status: str, now: datetime) -> ColumnElement[bool]:
    """The status as listed: a pending link past its expiry is "expired" before the expiry worker
    has marked it (the list shows it so, and filters the same way)."""
    pending, expired = EnrollmentStatus.PENDING.value, EnrollmentStatus.EXPIRED.value
    if status == pending:
        return and_(Enrollment.status == pending, Enrollment.expires_at > now)
    if status == expired:
        return or_(Enrollment.status == expired,
                   and_(Enrollment.status == pending, Enrollment.expires_at <= now))
    return Enrollment.status == status


async def list_enrollments(
    session: AsyncSession, *, limit: int, after_id: int | None = None, user: str | None = None,
    status: str | None = None,
) -> tuple[list[tuple[Enrollment, str]], int | None]:
    stmt = select(Enrollment, User.name).join(User, User.id == Enrollment.user_id).order_by(Enrollment.id)
    if after_id is not None:
        stmt = stmt.where(Enrollment.id > after_id)
    if user is not None:
        stmt = stmt.where(User.name == user)
    if status is not None:
        stmt = stmt.where(_status_is(status, utcnow()))
    rows = [(r[0], r[1]) for r in (await session.execute(stmt.limit(limit + 1))).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1][0].id if more and rows else None)


async def revoke(
    session: AsyncSession, enrollment_id: int, *, by: str | None = None
) -> tuple[Enrollment, str]:
    """Withdraw a link that has not been used. A used link cannot be revoked: remove the device."""
    enrollment, user_name = await get(session, enrollment_id)
    now = utcnow()
    if enrollment.status == EnrollmentStatus.PENDING.value and as_utc(enrollment.expires_at) <= now:
        await _mark_expired(session, enrollment.id, now)
        await session.refresh(enrollment)
    if enrollment.status != EnrollmentStatus.PENDING.value:
        raise Conflict(
            f"enrollment {enrollment_id} is {enrollment.status}, only a pending link can be revoked"
            + (" (to unenroll the device, send it the Remove command)"
               if enrollment.status in (EnrollmentStatus.DOWNLOADED.value, EnrollmentStatus.DELIVERED.value)
               else ""),
            enrollment_status=enrollment.status,
        )
    enrollment.status = EnrollmentStatus.REVOKED.value
    enrollment.revoked_at = now
    events.emit(session, "enrollment_revoked", user_id=enrollment.user_id, enrollment_id=enrollment.id,
                user=user_name, by=by)
    return enrollment, user_name


SCEP_PURPOSE = "ios-enrollment:"


async def enrollment_of_certificate(session: AsyncSession, cert_serial: int | str) -> Enrollment | None:
    """The enrollment that issued this identity, if one did: a PKCS#12 identity by its serial, a
    SCEP identity through the one-time challenge its SCEP request used (made for one enrollment)."""
    serial = serial_hex(cert_serial) if isinstance(cert_serial, int) else cert_serial.lower().lstrip("0")
    enrollment = await session.scalar(select(Enrollment).where(Enrollment.cert_serial == serial))
    if enrollment is not None:
        return enrollment
    purpose = await session.scalar(
        select(ScepChallenge.purpose)
        .join(ScepTransaction, ScepTransaction.challenge_id == ScepChallenge.id)
        .where(ScepTransaction.cert_serial == serial)
        .limit(1)
    )
    if purpose is None or not purpose.startswith(SCEP_PURPOSE) or not purpose[len(SCEP_PURPOSE):].isdigit():
        return None
    return await session.get(Enrollment, int(purpose[len(SCEP_PURPOSE):]))


async def attach_device(
    session: AsyncSession, *, device_id: int, cert_serial: int | str | None = None, user_id: int | None = None
) -> Enrollment | None:
    """For the check-in service at a device's first Authenticate: the enrollment the device came
    from (user, ``mdm_profile_identifier``, topic), recorded with its device id.

    PKCS#12 identities are found by certificate serial, SCEP identities by the challenge of their
    SCEP request; SCEP identities without one fall back to the user's most recent downloaded SCEP
    enrollment not yet bound.
    """
    enrollment = None
    if cert_serial is not None:
        enrollment = await enrollment_of_certificate(session, cert_serial)
    if enrollment is None and user_id is not None:
        enrollment = await session.scalar(
            select(Enrollment)
            .where(
                Enrollment.user_id == user_id,
                Enrollment.identity == "scep",
                Enrollment.status == EnrollmentStatus.DOWNLOADED.value,
                Enrollment.device_id.is_(None),
            )
            .order_by(Enrollment.downloaded_at.desc())
            .limit(1)
        )
    if enrollment is not None and enrollment.device_id is None:
        enrollment.device_id = device_id
    return enrollment
