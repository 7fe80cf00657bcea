"""The iOS enrollment profile of an enrollment: enrollment's ``ProfileBuilder`` for ``ios``.

Enrollment issues the device identity; this module checks what an iOS profile needs (the APNs
topic and the ``ios`` signing identity), puts the identity into ``com.apple.mdm`` profile payloads
(``mdm.ios.enrollment_profile``) and signs the result (``mdm.ios.signing``). The builder is
registered at start-up (``register_profile_builder``, or the ``PLUGIN`` below composed after the
enrollment plugin); the CLI passes it to enrollment directly (``builders()``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from mdm.core.errors import Conflict
from mdm.enroll import links
from mdm.enroll.seams import (
    PROFILE_BUILDERS,
    Env,
    IssuedCredential,
    Prepared,
    ProfileBuilders,
    ProfileContent,
    ScepCredential,
)
from mdm.ios import enrollment_profile as ep
from mdm.ios.signing import ProfileSigner, SigningError, sign_profile
from mdm.push.topic import DEVELOPMENT_WARNING, PushTopic, TopicError, read_topic
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin

PLATFORM = "ios"


@dataclass(frozen=True)
class Prerequisites:
    topic: PushTopic
    signer: ProfileSigner
    warnings: tuple[str, ...] = ()

    @property
    def push_topic(self) -> str:
        return self.topic.topic


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


def _identity(env: Env, content: ProfileContent) -> ep.Pkcs12Identity | ep.ScepIdentity:
    settings = env.settings
    credential = content.credential
    if isinstance(credential, IssuedCredential):
        return ep.Pkcs12Identity(
            certificate=credential.certificate,
            key=credential.key,
            chain=credential.chain,
            password=secrets.token_urlsafe(18),
            encryption=settings.pkcs12_encryption,
            friendly_name=f"{content.user} MDM identity",
        )
    if not isinstance(credential, ScepCredential):
        raise TypeError(f"an iOS profile cannot carry {type(credential).__name__}")
    return ep.ScepIdentity(
        url=links.scep_url(env.config, env.bound_ports),
        challenge=credential.challenge,
        subject=(("O", settings.organization), ("CN", f"{content.user} device {content.enrollment_id}")),
        key_size=settings.identity_key_bits,
    )


def spec_of(env: Env, prereq: Prerequisites, content: ProfileContent) -> ep.EnrollmentProfileSpec:
    return ep.EnrollmentProfileSpec(
        identifier=content.identifier,
        profile_uuid=content.profile_uuid,
        organization=env.settings.organization,
        server_url=links.server_url(env.config, env.bound_ports),
        checkin_url=links.checkin_url(env.config, env.bound_ports),
        topic=prereq.topic.topic,
        identity=_identity(env, content),
        root_certificates=list(content.roots),
        access_rights=env.settings.access_rights,
        per_user_connections=env.settings.per_user_connections,
    )


def _sign(spec: ep.EnrollmentProfileSpec, signer: ProfileSigner) -> bytes:
    return sign_profile(ep.build_bytes(spec), signer)


class IosProfileBuilder:
    """The signed ``.mobileconfig`` that enrolls an iPhone or iPad."""

    def prepare(self, env: Env) -> Prerequisites:
        return check_prerequisites(env)

    def build(self, env: Env, prepared: Prepared, content: ProfileContent) -> bytes:
        if not isinstance(prepared, Prerequisites):
            raise TypeError(f"not the iOS prerequisites: {prepared!r}")
        return _sign(spec_of(env, prepared, content), prepared.signer)


def builders() -> ProfileBuilders:
    """The profile builders of a process without the server (``mdm enroll --file``)."""
    return ProfileBuilders({PLATFORM: IosProfileBuilder()})


async def register_profile_builder(ctx: ServerContext) -> None:
    """Start-up hook; runs after the enrollment plugin's, which creates the registry."""
    ctx.services[PROFILE_BUILDERS].register(PLATFORM, IosProfileBuilder())


PLUGIN = Plugin(name="ios.enrollment", startup=(register_profile_builder,))
