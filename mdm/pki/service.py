"""The certificate life cycle as the admin API uses it: issuance rules, issue (with an optional
PKCS#12), list, show, revoke. Each call is one transaction; a revocation reaches the CRL and the
listeners' revoked set once it has committed."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mdm.config import ConfigError
from mdm.core.errors import InvalidArgument
from mdm.db.engine import Database
from mdm.pki import lifecycle, pkcs12, rules
from mdm.pki.enterprise_trust import EnterpriseTrust
from mdm.pki.issuance import IssuedIdentity
from mdm.pki.request_keys import RequestKeys
from mdm.pki.request_service import RequestService
from mdm.pki.requests import PendingCertificate, refusals_recorded
from mdm.pki.revocation import RevocationService
from mdm.pki.rules import IssuanceRule
from mdm.pki.sources import INTERNAL, SourceSet
from mdm.pki.tables import IssuedCertificateRecord

log = logging.getLogger("mdm.pki")

Owned = tuple[IssuedCertificateRecord, str | None]  # a certificate and its owner's name


@dataclass(frozen=True)
class Issued:
    identity: IssuedIdentity
    owner: str
    user_created: bool
    pkcs12: bytes | None  # key, certificate and chain, when the key was generated here
    generated_password: str | None  # the PKCS#12 password, when none was given


@dataclass(frozen=True)
class Pending:
    """The source holds the request (``requests`` shows it; the worker polls it)."""

    request: PendingCertificate
    owner: str
    user_created: bool


@dataclass(frozen=True)
class RuleChange:
    rule: IssuanceRule
    trusted_sources: list[str]  # enterprise sources whose CA certificates the listeners now trust


class CertificateService:
    def __init__(
        self,
        db: Database,
        sources: SourceSet,
        revocation: RevocationService,
        *,
        requests: RequestService | None = None,
        keys: RequestKeys | None = None,
        trust: EnterpriseTrust | None = None,
        poll_seconds: Callable[[], float] = lambda: 60.0,
    ) -> None:
        self.db = db
        self.sources = sources
        self.revocation = revocation
        self.requests = requests
        self.keys = keys
        self.trust = trust
        self.poll_seconds = poll_seconds

    # ---- issuance rules ----
    async def rules(self) -> list[IssuanceRule]:
        async with self.db.session() as session:
            return await rules.all_rules(session)

    async def rule(self, cert_type: str) -> IssuanceRule:
        async with self.db.session() as session:
            return await rules.get_rule(session, cert_type)

    async def set_rule(self, cert_type: str, changes: dict[str, Any], *, by: str) -> RuleChange:
        """Change a rule; a rule switched to an enterprise source makes this process trust that
        source's CA certificates at once (other replicas at their next ``mdm reload``)."""
        source = changes.get("source")
        if isinstance(source, str) and source in self.sources.names():
            try:  # a connector without its configuration must not become a rule's source
                self.sources.get(source)
            except ConfigError as exc:
                raise InvalidArgument(f"source: {exc}") from None
        async with self.db.transaction() as session:
            rule = await rules.set_rule(session, cert_type, changes, by=by, sources=self.sources.names())
        trusted: list[str] = []
        if self.trust is not None:
            trusted = await self.trust.refresh(self.db)
            if rule.source != INTERNAL and "source" in changes:
                log.info("rule %s now issues through %s: its CA certificates are trusted for device "
                         "authentication in this process now, on other replicas after `mdm reload`",
                         rule.type, rule.source)
        return RuleChange(rule, trusted)

    # ---- certificates ----
    async def page(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        user: str | None = None,
        status: str | None = None,
        cert_type: str | None = None,
        device_id: int | None = None,
    ) -> tuple[list[Owned], int | None]:
        async with self.db.session() as session:
            return await lifecycle.list_certificates(
                session, limit=limit, before_id=before_id, user=user, status=status, cert_type=cert_type,
                device_id=device_id,
            )

    async def issue(
        self,
        *,
        user_name: str,
        cert_type: str,
        csr: str | None = None,
        create_user: bool = False,
        email: str | None = None,
        p12_password: str | None = None,
        legacy_p12: bool = False,
    ) -> Issued | Pending:
        """Issue by the type's rule; without a CSR the key is generated and handed back in a
        PKCS#12 (under ``p12_password``, or a generated one returned with it). A source that
        holds the request answers ``Pending``; a denial or an unavailable source raises (422, 503)
        with its event recorded and nothing else."""
        public_key = lifecycle.load_csr(csr) if csr else None
        generated = None
        if public_key is None and not p12_password:
            generated = secrets.token_urlsafe(18)
        async with refusals_recorded(self.db), self.db.transaction() as session:
            result = await lifecycle.issue_for_user(
                session, self.sources, user_name=user_name, cert_type=cert_type, public_key=public_key,
                create_user=create_user, email=email, keys=self.keys, poll_seconds=self.poll_seconds(),
            )
            owner = result.user.name
        identity = result.identity
        if isinstance(identity, PendingCertificate):
            return Pending(identity, owner, result.user_created)
        p12 = None
        password = p12_password or generated
        if identity.key is not None and password:
            p12 = await asyncio.to_thread(
                pkcs12.export, identity.key, identity.certificate, identity.chain, password,
                name=f"{user_name} ({cert_type})", legacy=legacy_p12,
            )
        return Issued(identity, owner, result.user_created, p12, generated)

    async def certificate(self, serial: str) -> Owned:
        async with self.db.session() as session:
            record = await lifecycle.get(session, serial)
            return record, await lifecycle.owner_name(session, record)

    async def revoke(self, serial: str, reason: str, *, by: str) -> Owned:
        """Revoke; once committed, the certificate is refused at once and the CRL re-published."""
        async with self.db.transaction() as session:
            record = await lifecycle.revoke(session, serial, reason, by=by)
            owner = await lifecycle.owner_name(session, record)
        if record.source != INTERNAL:
            log.warning("certificate %s was issued by %s: it is revoked here (our listeners refuse it "
                        "now) but the enterprise CA's own CRL is not changed; revoke it there too",
                        record.serial, record.source)
        await self.revocation.after_revoke(record.serial)
        return record, owner
