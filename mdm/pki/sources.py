"""Certificate sources by name: the internal CA now; enterprise PKI connectors (AD CS web
enrollment, SCEP/EST to another CA) register themselves here later.

A connector is a ``CertificateSource`` (``mdm.pki.issuance``) plus a factory registered under the
name that issuance rules refer to (``source = "adcs"``). Its ``sign`` receives the whole
``CertificateRequest``, including ``template`` (the enterprise template name from the rule).
"""

from __future__ import annotations

from collections.abc import Callable

from mdm.config import Config
from mdm.core.errors import InvalidArgument
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateSource, InternalCASource

INTERNAL = "internal"
SourceFactory = Callable[[Config, CertificateAuthority], CertificateSource]

_FACTORIES: dict[str, SourceFactory] = {INTERNAL: lambda _config, ca: InternalCASource(ca)}


def register_source(name: str, factory: SourceFactory) -> None:
    """Make ``name`` usable as an issuance rule's source (call at import time, from a plugin)."""
    _FACTORIES[name] = factory


def source_names() -> list[str]:
    return sorted(_FACTORIES)


class SourceSet:
    """The sources of one process, built on first use (a connector may open sessions)."""

    def __init__(self, config: Config, ca: CertificateAuthority) -> None:
        self.config = config
        self.ca = ca
        self._built: dict[str, CertificateSource] = {}

    def get(self, name: str) -> CertificateSource:
        source = self._built.get(name)
        if source is None:
            factory = _FACTORIES.get(name)
            if factory is None:
                raise InvalidArgument(
                    f"certificate source {name!r} is not available (known: {', '.join(source_names())})"
                )
            source = self._built[name] = factory(self.config, self.ca)
        return source
