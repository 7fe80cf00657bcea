"""Client-certificate trust for enterprise-issued device certificates.

The listeners trust the internal issuing CA (current and retired). When an issuance rule names
another certificate source (an enterprise CA), that source's ``trust_anchors()`` are added to the
application verifier and to ``client-trust.pem`` (the iOS and KES TLS contexts, rebuilt at once),
so devices authenticate with the certificates the enterprise CA issued them. Applied at PKI
start-up, at every ``mdm reload``, and at once in the process where a rule is switched through
the API (other replicas on their next reload).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from mdm.db.engine import Database
from mdm.pki import castore, rules
from mdm.pki.listener_tls import CLIENT_CERT_LISTENERS
from mdm.pki.sources import INTERNAL, SourceSet
from mdm.pki.trust import ClientCertVerifier
from mdm.server.tls import ReloadableContext

log = logging.getLogger("mdm.pki.trust")


class EnterpriseTrust:
    def __init__(
        self,
        ca_dir: Path,
        base: list[x509.Certificate],
        verifier: ClientCertVerifier,
        tls: dict[str, ReloadableContext],
        sources: SourceSet,
    ) -> None:
        self.ca_dir = ca_dir
        self.base = list(base)
        self.verifier = verifier
        self.tls = tls
        self.sources = sources
        self.applied: tuple[str, ...] = ()

    def anchors_of(self, names: Iterable[str]) -> tuple[list[x509.Certificate], list[str]]:
        """The base anchors plus those of each named source; the names whose anchors were added."""
        anchors = list(self.base)
        added: list[str] = []
        for name in sorted(set(names) - {INTERNAL}):
            try:
                extra = self.sources.get(name).trust_anchors()
            except Exception as exc:  # a misconfigured connector must not stop the others
                log.error("certificate source %s: cannot read its trust anchors: %s", name, exc)
                continue
            fresh = [c for c in extra if c not in anchors]
            anchors += fresh
            added.append(name)
        return anchors, added

    async def apply(self, names: Iterable[str]) -> list[str]:
        """Trust the anchors of these sources (besides the internal CA) from now on."""
        anchors, added = self.anchors_of(names)
        await asyncio.to_thread(castore.write_client_trust, self.ca_dir, anchors)
        self.verifier.set_anchors(anchors)
        if tuple(added) != self.applied:
            for listener in CLIENT_CERT_LISTENERS:
                context = self.tls.get(listener)
                if context is not None:
                    try:
                        context.reload()
                    except Exception as exc:  # the old context stays in use
                        log.error("%s TLS context not rebuilt with the new client trust: %s", listener, exc)
            log.info("client-certificate trust: internal CA%s",
                     "".join(f" + {name}" for name in added) or " only")
        self.applied = tuple(added)
        return added

    async def refresh(self, db: Database) -> list[str]:
        """Trust the sources the issuance rules name now."""
        async with db.session() as session:
            names = {rule.source for rule in await rules.all_rules(session)}
        return await self.apply(names)
