"""The device identity of an enrollment and the profile that carries it.

Enrollment issues the identity in the caller's transaction (a certificate from the CA with a key
made here, or a one-time SCEP challenge); the platform's ``ProfileBuilder`` turns it into the
profile served to the device.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import User
from mdm.enroll.seams import Env, IssuedCredential, Prepared, ProfileContent, ScepCredential
from mdm.enroll.tables import Enrollment
from mdm.pki.issuance import CertificateRequest, issue
from mdm.pki.keys import PrivateKey, generate_key
from mdm.pki.tables import CertType

# The purpose of the SCEP challenge made for an enrollment, followed by the enrollment's id.
SCEP_PURPOSE = "ios-enrollment:"


def prepare(env: Env, platform: str = "ios") -> Prepared:
    """The platform's prerequisites, or a 409 naming what to configure. Reads files: call through
    ``asyncio.to_thread``."""
    return env.builders.get(platform).prepare(env)


async def new_identity_key(env: Env) -> PrivateKey | None:
    """The device's key pair when the profile carries it (PKCS#12), made in a worker thread."""
    if env.settings.identity != "pkcs12":
        return None
    pki = env.config.pki
    bits = max(pki.rsa_bits, env.settings.identity_key_bits)
    return await asyncio.to_thread(generate_key, "ec" if pki.key_type == "ec" else "rsa", bits)


async def _credential(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, key: PrivateKey | None
) -> IssuedCredential | ScepCredential:
    settings = env.settings
    if settings.identity == "scep":
        from mdm.scep.challenges import create_challenge

        challenge = await create_challenge(
            session, user_id=user.id, purpose=f"{SCEP_PURPOSE}{enrollment.id}",
            ttl_seconds=settings.scep_challenge_ttl_seconds,
        )
        return ScepCredential(challenge)
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
    return IssuedCredential(issued.certificate, key, chain)


async def build_profile(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, prepared: Prepared,
    key: PrivateKey | None,
) -> bytes:
    """Issue the identity in ``session`` (records + event) and return the platform's profile."""
    builder = env.builders.get(enrollment.platform)
    content = ProfileContent(
        identifier=enrollment.mdm_profile_identifier,
        profile_uuid=enrollment.uuid.upper(),
        enrollment_id=enrollment.id,
        user=user.name,
        credential=await _credential(env, session, enrollment, user, key),
        roots=(env.ca.root,),
    )
    return await asyncio.to_thread(builder.build, env, prepared, content)


def event_fields(enrollment: Enrollment, user: User) -> dict[str, Any]:
    """What every event about one enrollment says about it (``event_types._Enrollment``)."""
    return {
        "enrollment_id": enrollment.id,
        "user": user.name,
        "platform": enrollment.platform,
        "delivery": enrollment.delivery,
        "identity": enrollment.identity,
        "mdm_profile_identifier": enrollment.mdm_profile_identifier,
        "for_device_id": enrollment.for_device_id,
    }
