"""The certificate life cycle as the admin API uses it: issuance rules, issue (with an optional
PKCS#12), list, show, revoke. Each call is one transaction; a revocation reaches the CRL and the
listeners' revoked set once it has committed."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from mdm.db.engine import Database
from mdm.pki import lifecycle, pkcs12, rules
from mdm.pki.issuance import IssuedIdentity
from mdm.pki.revocation import RevocationService
from mdm.pki.rules import IssuanceRule
from mdm.pki.sources import SourceSet
from mdm.pki.tables import IssuedCertificateRecord

Owned = tuple[IssuedCertificateRecord, str | None]  # a certificate and its owner's name


@dataclass(frozen=True)
class Issued:
    identity: IssuedIdentity
    owner: str
    user_created: bool
    pkcs12: bytes | None  # key, certificate and chain, when the key was generated here
    generated_password: str | None  # the PKCS#12 password, when none was given


class CertificateService:
    def __init__(self, db: Database, sources: SourceSet, revocation: RevocationService) -> None:
        self.db = db
        self.sources = sources
        self.revocation = revocation

    # ---- issuance rules ----
    async def rules(self) -> list[IssuanceRule]:
        async with self.db.session() as session:
            return await rules.all_rules(session)

    async def rule(self, cert_type: str) -> IssuanceRule:
        async with self.db.session() as session:
            return await rules.get_rule(session, cert_type)

    async def set_rule(self, cert_type: str, changes: dict[str, Any], *, by: str) -> IssuanceRule:
        async with self.db.transaction() as session:
            return await rules.set_rule(session, cert_type, changes, by=by, sources=self.sources.names())

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
    ) -> Issued:
        """Issue by the type's rule; without a CSR the key is generated and handed back in a
        PKCS#12 (under ``p12_password``, or a generated one returned with it)."""
        public_key = lifecycle.load_csr(csr) if csr else None
        generated = None
        if public_key is None and not p12_password:
            generated = secrets.token_urlsafe(18)
        async with self.db.transaction() as session:
            result = await lifecycle.issue_for_user(
                session, self.sources, user_name=user_name, cert_type=cert_type, public_key=public_key,
                create_user=create_user, email=email,
            )
            owner = result.user.name
        identity = result.identity
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
        await self.revocation.after_revoke(record.serial)
        return record, owner
