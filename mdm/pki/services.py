"""The PKI's services as other features reach them: typed keys of ``ServerContext.services``,
set by the PKI plugin at start-up (which runs first)."""

from __future__ import annotations

from mdm.pki.ca import CertificateAuthority
from mdm.pki.enterprise_trust import EnterpriseTrust
from mdm.pki.issuance import CertificateSource
from mdm.pki.renewers import Renewers
from mdm.pki.request_keys import RequestKeys
from mdm.pki.request_service import RequestService
from mdm.pki.revocation import RevocationService
from mdm.pki.service import CertificateService
from mdm.pki.sources import SourceSet
from mdm.pki.trust import ClientCertVerifier
from mdm.server.context import ServerContext, ServiceKey

CA = ServiceKey("pki.ca", CertificateAuthority)
SOURCES = ServiceKey("pki.sources", SourceSet)
# The internal CA source (what SCEP and enrollment issue through by default).
SOURCE: ServiceKey[CertificateSource] = ServiceKey("pki.source")
VERIFIER = ServiceKey("pki.verifier", ClientCertVerifier)
REVOCATION = ServiceKey("pki.revocation", RevocationService)
CERTIFICATES = ServiceKey("pki.certificates", CertificateService)
# Platforms register how their devices renew certificates into this at their start-up.
RENEWERS = ServiceKey("pki.renewers", Renewers)
# Requests an enterprise CA holds pending: the administrator's view and the worker's polls.
REQUESTS = ServiceKey("pki.requests", RequestService)
# Seals keys generated here for pending requests (iOS profile identities) in their row.
REQUEST_KEYS = ServiceKey("pki.request_keys", RequestKeys)
TRUST = ServiceKey("pki.enterprise_trust", EnterpriseTrust)


def ca(ctx: ServerContext) -> CertificateAuthority:
    return ctx.services[CA]


def source(ctx: ServerContext) -> CertificateSource:
    return ctx.services[SOURCE]


def sources(ctx: ServerContext) -> SourceSet:
    return ctx.services[SOURCES]


def verifier(ctx: ServerContext) -> ClientCertVerifier:
    return ctx.services[VERIFIER]


def revocation(ctx: ServerContext) -> RevocationService:
    return ctx.services[REVOCATION]


def renewers(ctx: ServerContext) -> Renewers:
    return ctx.services[RENEWERS]


def requests(ctx: ServerContext) -> RequestService:
    return ctx.services[REQUESTS]


def request_keys(ctx: ServerContext) -> RequestKeys:
    return ctx.services[REQUEST_KEYS]
