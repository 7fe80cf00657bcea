"""Start-up wiring of the PKI: certificate sources, the client-certificate verifier, revocation
(CRL, revoked set, KES TLS check), the listeners' TLS contexts (reserve slots), the admin API and
web routes, and the revocation-refresh and renewal workers."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from mdm.config_reload import hot
from mdm.pki import castore, listener_tls
from mdm.pki.crl import crl_url_for
from mdm.pki.issuance import CertificateSource
from mdm.pki.keys import key_is_encrypted
from mdm.pki.revocation import RevocationService
from mdm.pki.slots import SLOTS, load_slot_chain
from mdm.pki.sources import INTERNAL, SourceSet
from mdm.pki.tables import CertStatus, CertType, IssuedCertificateRecord
from mdm.pki.trust import ClientCertVerifier
from mdm.server import registry
from mdm.server.context import ServerContext

log = logging.getLogger(__name__)

SOURCE = "pki.source"
SOURCES = "pki.sources"
VERIFIER = "pki.verifier"
REVOCATION = "pki.revocation"


# mdm reload: the workers and issuance read these from ctx.config at each use (the server_*, root_*,
# issuing_* and extra_sans keys only matter to the CLI). The CRL settings, the passphrase and the
# KES TLS check are built in at start: restart.
hot(*(f"pki.{key}" for key in (
    "revocation_refresh_seconds", "renewal_check_seconds", "renewal_retry_hours", "key_type", "rsa_bits",
    "server_validity_days", "extra_sans", "root_validity_days", "issuing_validity_days",
)))


@registry.startup_hook
async def start_pki(ctx: ServerContext) -> None:
    config = ctx.config
    passphrase = config.ca_passphrase()
    retired = await asyncio.to_thread(castore.load_retired, config.ca_dir, passphrase)
    ctx.ca.crl_url = crl_url_for(config)
    anchors = castore.client_anchors(ctx.ca, retired)
    await asyncio.to_thread(castore.write_client_trust, config.ca_dir, anchors)
    sources = SourceSet(config, ctx.ca)
    ctx.services[SOURCES] = sources
    ctx.services[SOURCE] = sources.get(INTERNAL)
    verifier_ = ClientCertVerifier(anchors, [])
    ctx.services[VERIFIER] = verifier_
    validity = timedelta(hours=config.pki.crl_validity_hours)
    service = RevocationService(ctx.db, ctx.ca, retired, verifier_, validity, ctx.tls, config.ca_dir)
    ctx.services[REVOCATION] = service
    await service.refresh(force=True)
    await record_server_certificates(ctx)
    listener_tls.install(config, ctx.tls)
    if passphrase and not key_is_encrypted(config.ca_dir / "issuing.key"):
        log.warning(
            "a CA passphrase is configured but %s is not encrypted; run `mdm certs encrypt-keys`",
            config.ca_dir / "issuing.key",
        )


async def record_server_certificates(ctx: ServerContext) -> int:
    """Record the slot certificates this CA issued (at ``mdm init``) that are not recorded yet.
    Certificates brought in with ``mdm certs set`` were not issued here and are not recorded."""
    found: dict[str, x509.Certificate] = {}
    for slot in SLOTS:
        try:
            leaf = load_slot_chain(ctx.config.certs_dir, slot)[0]
        except (OSError, ValueError, IndexError):
            continue
        if leaf.issuer != ctx.ca.issuing.subject:
            continue
        try:
            leaf.verify_directly_issued_by(ctx.ca.issuing)
        except (ValueError, TypeError, InvalidSignature):
            continue
        found[format(leaf.serial_number, "x")] = leaf
    if not found:
        return 0
    async with ctx.db.transaction() as session:
        known = set(
            (await session.scalars(
                select(IssuedCertificateRecord.serial).where(IssuedCertificateRecord.serial.in_(list(found)))
            )).all()
        )
        for serial, cert in found.items():
            if serial in known:
                continue
            session.add(IssuedCertificateRecord(
                serial=serial, type=CertType.SERVER.value, subject=cert.subject.rfc4514_string(),
                source=INTERNAL, status=CertStatus.VALID.value, not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            ))
    return len(set(found) - known)


@registry.worker("pki.revocation")
async def revocation_worker(ctx: ServerContext) -> None:
    """Pick up revocations made elsewhere and re-sign the CRL before it goes stale."""
    if not ctx.config.pki.crl_url and ctx.ca.crl_url is None:
        # Ephemeral web port: the distribution point is known only once the listener is bound.
        ctx.ca.crl_url = crl_url_for(ctx.config, ctx.bound_ports.get("web:http"))
    service = revocation(ctx)
    while True:
        await asyncio.sleep(ctx.config.pki.revocation_refresh_seconds)
        try:
            await service.refresh()
        except Exception:
            log.exception("revocation refresh failed; retrying")


def source(ctx: ServerContext) -> CertificateSource:
    """The internal CA source (what SCEP and enrollment issue through by default)."""
    return ctx.services[SOURCE]


def sources(ctx: ServerContext) -> SourceSet:
    """Every registered source by name (issuance rules pick one)."""
    return ctx.services[SOURCES]


def verifier(ctx: ServerContext) -> ClientCertVerifier:
    return ctx.services[VERIFIER]


def revocation(ctx: ServerContext) -> RevocationService:
    return ctx.services[REVOCATION]


# Route and worker registrations (they use the accessors above).
from mdm.pki import api, renewal, web  # noqa: E402, F401
