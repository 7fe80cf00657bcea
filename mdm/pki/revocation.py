"""Keeps every place that refuses revoked certificates current in one process:

- ``ClientCertVerifier.revoked`` (application-level checks: iOS identities, KES handlers),
- the CRL served on the web listener and written to ``DATA_DIR/ca``,
- the KES listener's TLS context (CRL check in the handshake), rebuilt when the CRL changes.

A revocation made in this process applies at once (``after_revoke``); one made elsewhere (another
replica, a script on the database) arrives with the next ``refresh`` (every
``pki.revocation_refresh_seconds``). ``refresh`` also re-signs the CRL before it goes stale.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.engine import Database
from mdm.pki import lifecycle
from mdm.pki.ca import CertificateAuthority
from mdm.pki.castore import RetiredCA
from mdm.pki.crl import PublishedCrl, RevokedEntry, Signer, publish
from mdm.pki.sources import INTERNAL
from mdm.pki.trust import ClientCertVerifier
from mdm.server.tls import ReloadableContext

log = logging.getLogger(__name__)


class RevocationService:
    def __init__(
        self,
        db: Database,
        ca: CertificateAuthority,
        retired: list[RetiredCA],
        verifier: ClientCertVerifier,
        validity: timedelta,
        tls: dict[str, ReloadableContext],
        ca_dir: Path,
    ) -> None:
        self.db = db
        self.ca = ca
        self.retired = retired
        self.verifier = verifier
        self.validity = validity
        self.tls = tls
        self.ca_dir = ca_dir
        self.published: PublishedCrl | None = None
        self._marker: tuple[int, str | None] | None = None
        self._lock = asyncio.Lock()

    @property
    def crl_der(self) -> bytes | None:
        return self.published.der if self.published else None

    def stale(self, now: datetime) -> bool:
        if self.published is None:
            return True
        return now >= self.published.this_update + self.validity / 2

    async def after_revoke(self, serial: str) -> None:
        """Call after the revocation committed: refuse it now, then publish the new CRL."""
        self.verifier.add_revoked(serial)
        await self.refresh(force=True)

    async def refresh(self, *, force: bool = False, now: datetime | None = None) -> bool:
        """Re-read revocations; re-publish if they changed, the CRL is past half its validity, or
        forced. Returns whether a new CRL was published."""
        async with self._lock:
            now = now or datetime.now(UTC)
            async with self.db.session() as session:
                marker = await lifecycle.revocation_marker(session, now)
                if not (force or marker != self._marker or self.stale(now)):
                    return False
                everywhere = await lifecycle.revoked_entries(session, now)
                # Enterprise-issued certificates revoked here are refused by our listeners, but only
                # the internal CA's own certificates go on its CRL (the domain CA keeps its own).
                serials = frozenset(e.serial for e in everywhere)
                entries = await lifecycle.revoked_entries(session, now, INTERNAL)
                if self.retired and entries:
                    entries = await self._with_issuers(session, entries)
            self.verifier.set_revoked(serials)
            signers = [Signer(r.issuing, r.key) for r in self.retired if r.key is not None]
            current = Signer(self.ca.issuing, self.ca.issuing_key)
            self.published = await asyncio.to_thread(
                publish, self.ca_dir, current, signers, entries, self.validity, now
            )
            self._marker = marker
            log.info(
                "published CRL #%d: %d revoked certificate(s), next update %s",
                self.published.number, self.published.count, self.published.next_update.isoformat(),
            )
            kes = self.tls.get("kes")
            if kes is not None:
                try:
                    kes.reload()
                except Exception as exc:  # a bad slot file must not stop revocation from applying
                    log.error("KES TLS context not rebuilt after the CRL update: %s", exc)
            return True

    async def _with_issuers(self, session: AsyncSession, entries: list[RevokedEntry]) -> list[RevokedEntry]:
        """With retired CAs around, each entry must go to its issuer's CRL: read it from the PEM."""
        pems = await lifecycle.revoked_pems(session, [e.serial for e in entries])
        out = []
        for e in entries:
            issuer = None
            pem = pems.get(e.serial)
            if pem:
                try:
                    issuer = x509.load_pem_x509_certificate(pem.encode()).issuer
                except ValueError:
                    issuer = None
            out.append(RevokedEntry(e.serial, e.revoked_at, e.reason, e.not_after, issuer))
        return out
