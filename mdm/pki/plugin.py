"""Start-up wiring of the PKI: certificate sources, the client-certificate verifier, revocation
(CRL, revoked set, KES TLS check), the listeners' TLS contexts (reserve slots), the certificate
service of the admin API, the renewers platforms register into, the web routes, and the
revocation-refresh and renewal workers.

Only the composition root (``mdm.plugins``) imports this module."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from mdm.config_reload import hot
from mdm.pki import castore, handlers_web, listener_tls, store
from mdm.pki.ca import CertificateAuthority
from mdm.pki.crl import crl_url_for
from mdm.pki.enterprise_trust import EnterpriseTrust
from mdm.pki.keys import key_is_encrypted
from mdm.pki.renewal import renewal_worker
from mdm.pki.renewers import Renewers
from mdm.pki.request_keys import RequestKeys
from mdm.pki.request_service import RequestService, RequestSettings
from mdm.pki.revocation import RevocationService
from mdm.pki.service import CertificateService
from mdm.pki.services import (
    CA,
    CERTIFICATES,
    RENEWERS,
    REQUEST_KEYS,
    REQUESTS,
    REVOCATION,
    SOURCE,
    SOURCES,
    TRUST,
    VERIFIER,
    revocation,
)
from mdm.pki.slots import SLOTS, load_slot_chain
from mdm.pki.sources import DEFAULT_SOURCES, INTERNAL, SourceFactory, SourceSet
from mdm.pki.status import CertificatesSource
from mdm.pki.tables import CertStatus, CertType, IssuedCertificateRecord
from mdm.pki.trust import ClientCertVerifier
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker

log = logging.getLogger(__name__)


async def start_pki(ctx: ServerContext, factories: Mapping[str, SourceFactory] = DEFAULT_SOURCES) -> None:
    config = ctx.config
    passphrase = config.ca_passphrase()
    ca = await asyncio.to_thread(CertificateAuthority.load, config.ca_dir, passphrase)
    ctx.services[CA] = ca
    retired = await asyncio.to_thread(castore.load_retired, config.ca_dir, passphrase)
    ca.crl_url = crl_url_for(config)
    anchors = castore.client_anchors(ca, retired)
    await asyncio.to_thread(castore.write_client_trust, config.ca_dir, anchors)
    sources = SourceSet(config, ca, factories)
    ctx.services[SOURCES] = sources
    ctx.services[SOURCE] = sources.get(INTERNAL)
    verifier_ = ClientCertVerifier(anchors, [])
    ctx.services[VERIFIER] = verifier_
    validity = timedelta(hours=config.pki.crl_validity_hours)
    service = RevocationService(ctx.db, ca, retired, verifier_, validity, ctx.tls, config.ca_dir)
    ctx.services[REVOCATION] = service
    trust = EnterpriseTrust(config.ca_dir, anchors, verifier_, ctx.tls, sources)
    ctx.services[TRUST] = trust
    ctx.services[REQUEST_KEYS] = RequestKeys(config.ca_dir, passphrase)
    requests = RequestService(ctx.db, sources, lambda: request_settings(ctx))
    ctx.services[REQUESTS] = requests
    ctx.services[CERTIFICATES] = CertificateService(
        ctx.db, sources, service, requests=requests, keys=ctx.services[REQUEST_KEYS], trust=trust,
        poll_seconds=lambda: ctx.config.pki.request_poll_seconds,
    )
    ctx.services[RENEWERS] = Renewers()
    await service.refresh(force=True)
    await trust.refresh(ctx.db)
    await record_server_certificates(ctx)
    listener_tls.install(config, ctx.tls)
    ctx.status.register(CertificatesSource(lambda: ctx.services[CA], config.certs_dir, lambda: list(ctx.tls)))
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
        issuing = ctx.services[CA].issuing
        if leaf.issuer != issuing.subject:
            continue
        try:
            leaf.verify_directly_issued_by(issuing)
        except (ValueError, TypeError, InvalidSignature):
            continue
        found[format(leaf.serial_number, "x")] = leaf
    if not found:
        return 0
    async with ctx.db.transaction() as session:
        known = await store.known_serials(session, found)
        await store.add_records(session, (
            IssuedCertificateRecord(
                serial=serial, type=CertType.SERVER.value, subject=cert.subject.rfc4514_string(),
                source=INTERNAL, status=CertStatus.VALID.value, not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            )
            for serial, cert in found.items()
            if serial not in known
        ))
    return len(set(found) - known)


async def revocation_worker(ctx: ServerContext) -> None:
    """Pick up revocations made elsewhere and re-sign the CRL before it goes stale."""
    ca = ctx.services[CA]
    if not ctx.config.pki.crl_url and ca.crl_url is None:
        # Ephemeral web port: the distribution point is known only once the listener is bound.
        ca.crl_url = crl_url_for(ctx.config, ctx.bound_ports.get("web:http"))
    service = revocation(ctx)
    while True:
        await asyncio.sleep(ctx.config.pki.revocation_refresh_seconds)
        try:
            await service.refresh()
        except Exception:
            log.exception("revocation refresh failed; retrying")


def request_settings(ctx: ServerContext) -> RequestSettings:
    pki = ctx.config.pki
    return RequestSettings(poll_seconds=pki.request_poll_seconds, max_days=pki.request_max_days)


async def requests_worker(ctx: ServerContext) -> None:
    """Poll the requests enterprise CAs hold pending (``pki.request_poll_seconds``)."""
    service = ctx.services[REQUESTS]
    while True:
        try:
            await service.poll_due()
        except Exception:
            log.exception("polling pending certificate requests failed; retrying")
        await asyncio.sleep(min(ctx.config.pki.request_poll_seconds, 30.0))


async def reload_trust(ctx: ServerContext) -> None:
    """mdm reload: trust the sources the issuance rules name now (changed on another replica)."""
    await ctx.services[TRUST].refresh(ctx.db)


def make_plugin(sources: Mapping[str, SourceFactory] = DEFAULT_SOURCES) -> Plugin:
    """The PKI plugin with these certificate sources (by the name issuance rules use; must
    include ``internal``): the composition root adds enterprise connectors here."""
    factories = dict(sources)
    if INTERNAL not in factories:
        raise ValueError(f"the certificate sources must include {INTERNAL!r}")

    async def startup(ctx: ServerContext) -> None:
        await start_pki(ctx, factories)

    return Plugin(
        name="pki",
        startup=(startup,),
        routes={"web": handlers_web.install},
        workers=(
            Worker("pki.revocation", revocation_worker), Worker("pki.renewal", renewal_worker),
            Worker("pki.requests", requests_worker),
        ),
        reload=(reload_trust,),
        # mdm reload: the workers and issuance read these from ctx.config at each use (the server_*,
        # root_*, issuing_* and extra_sans keys only matter to the CLI). The CRL settings, the
        # passphrase and the KES TLS check are built in at start: restart.
        hot=(hot(*(f"pki.{key}" for key in (
            "revocation_refresh_seconds", "renewal_check_seconds", "renewal_retry_hours", "key_type",
            "rsa_bits", "request_poll_seconds", "request_max_days",
            "server_validity_days", "extra_sans", "root_validity_days", "issuing_validity_days",
        ))),),
    )


PLUGIN = make_plugin()
