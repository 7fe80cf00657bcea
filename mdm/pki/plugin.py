"""Start-up wiring of the PKI: the certificate source and the client-certificate verifier."""

from __future__ import annotations

from mdm.pki.issuance import CertificateSource, InternalCASource
from mdm.pki.trust import ClientCertVerifier
from mdm.server import registry
from mdm.server.context import ServerContext

SOURCE = "pki.source"
VERIFIER = "pki.verifier"


@registry.startup_hook
async def start_pki(ctx: ServerContext) -> None:
    ctx.services[SOURCE] = InternalCASource(ctx.ca)
    ctx.services[VERIFIER] = ClientCertVerifier([ctx.ca.root], [ctx.ca.issuing])


def source(ctx: ServerContext) -> CertificateSource:
    return ctx.services[SOURCE]


def verifier(ctx: ServerContext) -> ClientCertVerifier:
    return ctx.services[VERIFIER]
