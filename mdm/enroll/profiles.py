"""The device identity of an enrollment and the profile that carries it.

Enrollment issues the identity in the caller's transaction (a certificate from the ``mobile``
rule's source with a key made here, see ``mdm.enroll.identity``, or a one-time SCEP challenge);
the platform's ``ProfileBuilder`` turns it into the profile served to the device.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import User, utcnow
from mdm.enroll import links
from mdm.enroll.identity import issue_identity, new_key
from mdm.enroll.seams import (
    KES_TOKEN_PURPOSE,
    AgentCredential,
    Env,
    IssuedCredential,
    Prepared,
    ProfileContent,
    ScepCredential,
)
from mdm.enroll.tables import Delivery, Enrollment
from mdm.pki.keys import PrivateKey
from mdm.pki.requests import PendingCertificate

# The purpose of the SCEP challenge made for an enrollment, followed by the enrollment's id.
SCEP_PURPOSE = "ios-enrollment:"


def prepare(env: Env, platform: str = "ios") -> Prepared:
    """The platform's prerequisites, or a 409 naming what to configure. Reads files: call through
    ``asyncio.to_thread``."""
    return env.builders.get(platform).prepare(env)


async def new_identity_key(env: Env, identity: str | None = None) -> PrivateKey | None:
    """The device's key pair when the profile carries it (PKCS#12), made in a worker thread.
    ``identity``: the enrollment's (agent platforms record it), else ``[enroll] identity``."""
    if (identity or env.settings.identity) != "pkcs12":
        return None
    return await new_key(env)


def agent_token_purpose(enrollment_id: int) -> str:
    return f"{KES_TOKEN_PURPOSE}{enrollment_id}"


async def new_agent_token(
    env: Env, session: AsyncSession, enrollment: Enrollment, link_token: str | None
) -> str:
    """The agent's one-time enrollment token, valid until the enrollment expires, in ``session``:
    derived from the link's token for a link (the QR code carries it), random for a file."""
    from mdm.scep.challenges import create_challenge

    ttl = max(1, int((enrollment.expires_at - utcnow()).total_seconds()))
    return await create_challenge(
        session, user_id=enrollment.user_id, purpose=agent_token_purpose(enrollment.id), ttl_seconds=ttl,
        secret=None if link_token is None else links.agent_token(link_token),
    )


async def _credential(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, key: PrivateKey | None,
    link_token: str | None,
) -> IssuedCredential | ScepCredential | AgentCredential | PendingCertificate:
    settings = env.settings
    if enrollment.platform == "android":
        # A link's token was made with the enrollment; a file's is made now.
        if link_token is None and enrollment.delivery == Delivery.LINK.value:
            raise ValueError(f"enrollment {enrollment.id}: a link's package needs the link's token")
        token = (links.agent_token(link_token) if link_token is not None
                 else await new_agent_token(env, session, enrollment, None))
        identity = None
        if enrollment.identity == "pkcs12":
            issued = await issue_identity(env, session, enrollment, user, key)
            if isinstance(issued, PendingCertificate):
                return issued
            identity = issued
        return AgentCredential(token, identity)
    if settings.identity == "scep":
        from mdm.scep.challenges import create_challenge

        challenge = await create_challenge(
            session, user_id=user.id, purpose=f"{SCEP_PURPOSE}{enrollment.id}",
            ttl_seconds=settings.scep_challenge_ttl_seconds,
        )
        return ScepCredential(challenge)
    return await issue_identity(env, session, enrollment, user, key)


async def build_profile(
    env: Env, session: AsyncSession, enrollment: Enrollment, user: User, prepared: Prepared,
    key: PrivateKey | None, link_token: str | None = None,
) -> bytes | PendingCertificate:
    """Issue the identity in ``session`` (records + event) and return the platform's profile, or
    the request the identity's CA holds pending (recorded in ``session``; no profile yet).
    ``link_token``: the clear token of the link being served (an agent's token derives from it)."""
    builder = env.builders.get(enrollment.platform)
    credential = await _credential(env, session, enrollment, user, key, link_token)
    if isinstance(credential, PendingCertificate):
        return credential
    content = ProfileContent(
        identifier=enrollment.mdm_profile_identifier,
        profile_uuid=enrollment.uuid.upper(),
        enrollment_id=enrollment.id,
        user=user.name,
        expires_at=enrollment.expires_at,
        credential=credential,
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
