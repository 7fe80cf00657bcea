"""Certificate sources by name: the internal CA now; enterprise PKI connectors (AD CS web
enrollment, SCEP/EST to another CA) later.

A connector is a ``CertificateSource`` (``mdm.pki.issuance``) plus a factory under the name that
issuance rules refer to (``source = "adcs"``). Its ``sign`` receives the whole
``CertificateRequest``, including ``template`` (the enterprise template name from the rule).
Nothing registers itself: the composition root hands the mapping of factories to the PKI plugin
(``mdm.pki.plugin.make_plugin(sources=...)``), which builds the process's ``SourceSet``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from mdm.config import Config
from mdm.core.errors import InvalidArgument
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateSource, InternalCASource

INTERNAL = "internal"
SourceFactory = Callable[[Config, CertificateAuthority], CertificateSource]


def _internal(_config: Config, ca: CertificateAuthority) -> CertificateSource:
    return InternalCASource(ca)


# The sources every process has; connectors are added to a copy of this by the composition root.
DEFAULT_SOURCES: Mapping[str, SourceFactory] = MappingProxyType({INTERNAL: _internal})


class SourceSet:
    """The sources of one process, built on first use (a connector may open sessions)."""

    def __init__(
        self,
        config: Config,
        ca: CertificateAuthority,
        factories: Mapping[str, SourceFactory] = DEFAULT_SOURCES,
    ) -> None:
        if INTERNAL not in factories:
            raise ValueError(f"the certificate sources must include {INTERNAL!r}")
        self.config = config
        self.ca = ca
        self._factories = dict(factories)
        self._built: dict[str, CertificateSource] = {}

    def names(self) -> list[str]:
        """The names an issuance rule may use as its source."""
        return sorted(self._factories)

    def get(self, name: str) -> CertificateSource:
        source = self._built.get(name)
        if source is None:
            factory = self._factories.get(name)
            if factory is None:
                raise InvalidArgument(
                    f"certificate source {name!r} is not available (known: {', '.join(self.names())})"
                )
            source = self._built[name] = factory(self.config, self.ca)
        return source
