"""Making enrollments: a pending one-time link, or a profile file for Apple Configurator.

The profile of a link, with the device's private key inside its PKCS#12, is built when the link
is downloaded (``mdm.enroll.download``), not when it is created: no private key or PKCS#12
password is ever stored. The other jobs live beside this module: ``validation``, ``users``,
``profiles`` (identity and profile), ``mailing``, ``download``, ``expiry``, ``admin`` (show,
list, revoke) and ``attach`` (a device's first check-in).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import Conflict, InvalidArgument
from mdm.db.engine import Database
from mdm.db.models import User, utcnow
from mdm.enroll import links, store
from mdm.enroll.config import smtp_config
from mdm.enroll.event_types import ENROLLMENT_CREATED
from mdm.enroll.profiles import build_profile, event_fields, new_agent_token, new_identity_key, prepare
from mdm.enroll.seams import AgentPrepared, Env, Prepared, env_of
from mdm.enroll.tables import Delivery, Enrollment, EnrollmentStatus
from mdm.enroll.users import get_or_create_user, target_device
from mdm.enroll.validation import PLATFORMS, identifier_prefix, validate_request
from mdm.pki.requests import PendingCertificate

__all__ = [
    "PLATFORMS", "Created", "Env", "create_file", "create_link", "create_with_retry", "env_of", "identity_of",
]


@dataclass
class Created:
    enrollment: Enrollment
    user: User
    user_created: bool
    token: str | None = None
    url: str | None = None
    profile: bytes | None = None
    warnings: tuple[str, ...] = ()
    qr_text: str | None = None  # what the link's QR code holds: the URL, or an agent's enrollment data


def identity_of(env: Env, platform: str, pkcs12: bool | None) -> str:
    """How the enrollment carries the device identity. Android: "pkcs12" when the package holds
    the user's PKCS#12 (asked for, or ``[enroll] android_pkcs12``), else "scep" (the agent makes
    its key and gets its certificate with the one-time token)."""
    if platform != "android":
        if pkcs12 is not None:
            raise InvalidArgument("pkcs12 applies to android enrollments only (iOS: [enroll] identity)",
                                  field="pkcs12")
        return env.settings.identity
    return "pkcs12" if (env.settings.android_pkcs12 if pkcs12 is None else pkcs12) else "scep"


def _new_enrollment(env: Env, user: User, email: str | None, delivery: Delivery, created_by: str | None,
                    prepared: Prepared, platform: str, identity: str | None = None) -> Enrollment:
    enrollment_uuid = str(uuid.uuid4())
    now = utcnow()
    # A file for Apple Configurator is used when written; an agent's token lives as long as a link.
    lives = delivery is Delivery.LINK or platform == "android"
    return Enrollment(
        uuid=enrollment_uuid,
        platform=platform,
        user_id=user.id,
        email=email,
        delivery=delivery.value,
        status=(EnrollmentStatus.PENDING if delivery is Delivery.LINK else EnrollmentStatus.DELIVERED).value,
        identity=identity or env.settings.identity,
        created_at=now,
        created_by=created_by,
        expires_at=now + timedelta(seconds=env.settings.link_ttl_seconds) if lives else now,
        downloaded_at=None if delivery is Delivery.LINK else now,
        mdm_profile_identifier=f"{identifier_prefix(env.config)}.enrollment.{enrollment_uuid}",
        topic=prepared.push_topic,
    )


async def create_link(
    env: Env, session: AsyncSession, prepared: Prepared, *, user: str, email: str | None,
    created_by: str | None, for_device_id: int | None = None, platform: str = "ios",
    identity: str | None = None,
) -> Created:
    """Record a pending one-time link; the clear token exists only in the returned value. An
    agent platform's enrollment token is made with it (its QR code carries the token)."""
    if email and not smtp_config(env.config).host:
        raise Conflict(
            "an e-mail address was given but e-mail delivery is not configured (set smtp.host and "
            "smtp.from), or enroll without an e-mail address and hand out the URL / QR code",
            field="email",
        )
    target = await target_device(session, for_device_id, platform)
    owner, user_created = await get_or_create_user(session, user, email)
    enrollment = _new_enrollment(env, owner, email, Delivery.LINK, created_by, prepared, platform, identity)
    enrollment.for_device_id = target
    token = links.new_token()
    enrollment.token_hash = links.token_hash(token)
    await store.add_enrollment(session, enrollment)
    url = links.link_url(env.config, token, env.bound_ports)
    qr_text = url
    if isinstance(prepared, AgentPrepared):
        qr_text = prepared.qr_text(url, await new_agent_token(env, session, enrollment, token))
    events.emit(
        session, ENROLLMENT_CREATED, user_id=owner.id, expires_at=enrollment.expires_at.isoformat(),
        user_created=user_created, email=email, **event_fields(enrollment, owner),
    )
    return Created(
        enrollment, owner, user_created, token=token, url=url, warnings=prepared.warnings, qr_text=qr_text,
    )


async def create_file(
    env: Env, session: AsyncSession, prepared: Prepared, *, user: str, created_by: str | None,
    platform: str = "ios", identity: str | None = None,
) -> Created:
    """Build the profile now (for Apple Configurator; an Android package). The caller writes the
    file before the transaction commits, so a failed write leaves no enrollment and no certificate."""
    key = await new_identity_key(env, identity)
    owner, user_created = await get_or_create_user(session, user, None)
    enrollment = _new_enrollment(env, owner, None, Delivery.FILE, created_by, prepared, platform, identity)
    await store.add_enrollment(session, enrollment)
    profile = await build_profile(env, session, enrollment, owner, prepared, key)
    if isinstance(profile, PendingCertificate):  # a file cannot come back for it: nothing is kept
        raise Conflict(f"{profile.description}; a profile file needs its certificate now: send the "
                       "enrollment as a link instead (it is served once the CA issues the certificate)")
    events.emit(
        session, ENROLLMENT_CREATED, user_id=owner.id, user_created=user_created,
        cert_serial=enrollment.cert_serial, **event_fields(enrollment, owner),
    )
    return Created(enrollment, owner, user_created, profile=profile, warnings=prepared.warnings)


async def create_with_retry(
    env: Env, db: Database, *, platform: str, user: str, email: str | None, created_by: str | None,
    for_device_id: int | None = None, pkcs12: bool | None = None,
) -> Created:
    """Validate, check prerequisites, create the link in one transaction (retried once if a
    concurrent request created the same user first)."""
    platform, user, email = validate_request(platform, user, email)
    identity = identity_of(env, platform, pkcs12)
    prepared = await asyncio.to_thread(prepare, env, platform)
    for attempt in (1, 2):
        try:
            async with db.transaction() as session:
                return await create_link(
                    env, session, prepared, user=user, email=email, created_by=created_by,
                    for_device_id=for_device_id, platform=platform, identity=identity,
                )
        except IntegrityError:
            if attempt == 2:
                raise Conflict(f"could not create the user {user!r} concurrently; retry") from None
    raise AssertionError("unreachable")
