"""What enrollment needs from a platform, and what it is given to work with.

Enrollment is platform-neutral: it validates requests, records enrollments, issues the device
identity (a certificate and key, or a SCEP challenge) and serves one-time links. The profile that
carries the identity is a platform's format (the iOS ``.mobileconfig``, signed): a platform
implements ``ProfileBuilder`` and registers it in the ``ProfileBuilders`` held under
``PROFILE_BUILDERS`` at start-up (the enrollment plugin creates the registry first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from cryptography import x509

from mdm.config import Config
from mdm.core.errors import Conflict
from mdm.enroll.config import EnrollConfig, enroll_config
from mdm.pki import services as pki_services
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateSource
from mdm.pki.keys import PrivateKey
from mdm.pki.request_keys import RequestKeys
from mdm.pki.sources import SourceSet
from mdm.scep import challenges
from mdm.server.context import ServerContext, ServiceKey


@dataclass(frozen=True)
class IssuedCredential:
    """A device identity issued by the CA, delivered with its key (e.g. as PKCS#12)."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]  # intermediates; the roots travel in ``ProfileContent``


@dataclass(frozen=True)
class ScepCredential:
    """The device makes its key and enrolls over SCEP with this one-time challenge."""

    challenge: str


@dataclass(frozen=True)
class AgentCredential:
    """An agent enrollment (Android/KES): the one-time enrollment token the agent redeems for its
    certificate, and, when the package carries one (publishing-proxy scheme), the user's issued
    identity."""

    token: str
    identity: IssuedCredential | None = None


# The purpose of the one-time enrollment token of an Android (KES) enrollment, followed by the
# enrollment's id. The token is a one-time challenge of ``mdm.scep.challenges`` made for this
# purpose: the KES certificate request redeems it, SCEP refuses it (defined there, as SCEP may not
# import enrollment).
KES_TOKEN_PURPOSE = challenges.KES_TOKEN_PURPOSE


@dataclass(frozen=True)
class ProfileContent:
    """One enrollment's profile, platform-neutral."""

    identifier: str  # the enrollment's mdm_profile_identifier
    profile_uuid: str
    enrollment_id: int
    user: str
    expires_at: datetime  # of the enrollment (an agent's token is valid until then)
    credential: IssuedCredential | ScepCredential | AgentCredential
    roots: tuple[x509.Certificate, ...]


class Prepared(Protocol):
    """A platform's prerequisites, checked before an enrollment is made or a link is served."""

    @property
    def push_topic(self) -> str | None:
        """Recorded on the enrollment (the topic the device will be woken on)."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """Shown to the administrator; the enrollment is made anyway."""


@runtime_checkable
class AgentPrepared(Prepared, Protocol):
    """The prerequisites of a platform whose agent enrolls with a one-time token (KES): its link's
    QR code carries what the agent needs to enroll by scanning it, not just the link."""

    def qr_text(self, url: str, token: str) -> str:
        """What the QR code of a link to ``url`` with the enrollment ``token`` holds."""


class ProfileBuilder(Protocol):
    """Builds one platform's enrollment profile. Both methods block (files, signing): enrollment
    calls them in a worker thread."""

    def prepare(self, env: Env) -> Prepared:
        """Check what building needs (push identity, signing identity...), or raise ``Conflict``
        naming what to configure."""

    def build(self, env: Env, prepared: Prepared, content: ProfileContent) -> bytes:
        """The profile as served to the device, with ``prepared`` from this builder's ``prepare``."""


@runtime_checkable
class PackageBuilder(ProfileBuilder, Protocol):
    """A builder whose profile is not an Apple ``.mobileconfig``: how the link serves it."""

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` of the profile."""

    @property
    def filename(self) -> str:
        """The file name offered in ``Content-Disposition``."""


class ProfileBuilders:
    """The platforms that can be enrolled, by platform name."""

    def __init__(self, builders: Mapping[str, ProfileBuilder] | None = None) -> None:
        self._builders: dict[str, ProfileBuilder] = dict(builders or {})

    def register(self, platform: str, builder: ProfileBuilder) -> None:
        if platform in self._builders:
            raise ValueError(f"a profile builder for {platform!r} is registered twice")
        self._builders[platform] = builder

    def get(self, platform: str) -> ProfileBuilder:
        try:
            return self._builders[platform]
        except KeyError:
            raise Conflict(
                f"this server cannot build {platform} enrollment profiles (no profile builder)",
                field="platform",
            ) from None

    def __contains__(self, platform: object) -> bool:
        return platform in self._builders


PROFILE_BUILDERS = ServiceKey("enroll.profile_builders", ProfileBuilders)


@dataclass(frozen=True)
class Env:
    """What enrolling needs; from the running server (``env_of``) or from the CLI.

    ``source``: the internal CA's source. ``sources``: every source of the process (an issuance
    rule names one); without it (a process without the server) only ``source`` is known.
    ``keys``: seals the generated key of an identity the CA holds pending."""

    config: Config
    ca: CertificateAuthority
    source: CertificateSource
    bound_ports: Mapping[str, int] = field(default_factory=dict)
    builders: ProfileBuilders = field(default_factory=ProfileBuilders)
    sources: SourceSet | None = None
    keys: RequestKeys | None = None

    @property
    def settings(self) -> EnrollConfig:
        return enroll_config(self.config)

    def source_named(self, name: str) -> CertificateSource:
        """The source an issuance rule names, or a 409 when this process does not have it."""
        if self.sources is not None:
            return self.sources.get(name)
        if name == self.source.name:
            return self.source
        raise Conflict(
            f"the mobile issuance rule's certificate source {name!r} is only reachable from the "
            "running server: send the enrollment as a link instead",
            field="source",
        )


def env_of(ctx: ServerContext) -> Env:
    return Env(ctx.config, pki_services.ca(ctx), pki_services.source(ctx), ctx.bound_ports,
               ctx.services[PROFILE_BUILDERS], pki_services.sources(ctx), pki_services.request_keys(ctx))
