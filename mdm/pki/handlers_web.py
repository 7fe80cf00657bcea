"""Public PKI files on the web listener (HTTP 8060 and HTTPS 8061): the CRL named in issued
certificates' distribution point, and the CA certificates for manual installation."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from mdm.pki import services
from mdm.pki.ca import pem_chain
from mdm.pki.crl import CRL_PATH
from mdm.server.context import ServerContext, ctx_of

CRL_MAX_AGE = 60  # seconds: a revocation reaches caching relying parties within a minute


async def crl(request: web.Request) -> web.Response:
    service = services.revocation(ctx_of(request))
    published = service.published
    if published is None:
        raise web.HTTPServiceUnavailable(text="the CRL is being generated; retry shortly")
    remaining = int((published.next_update - datetime.now(UTC)).total_seconds())
    return web.Response(
        body=published.der,
        content_type="application/pkix-crl",
        headers={
            "Cache-Control": f"public, max-age={max(0, min(CRL_MAX_AGE, remaining))}",
            "Last-Modified": published.this_update.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        },
    )


ROOTS_KEY = web.AppKey("mdm_pki_roots", bytes)


async def root_pem(request: web.Request) -> web.Response:
    """The issuing CA's root, then any previous roots the listeners may still chain to."""
    return web.Response(body=request.app[ROOTS_KEY], content_type="application/x-pem-file")


async def root_der(request: web.Request) -> web.Response:
    ca = services.ca(ctx_of(request))
    return web.Response(
        body=ca.root.public_bytes(serialization.Encoding.DER), content_type="application/x-x509-ca-cert"
    )


async def chain_pem(request: web.Request) -> web.Response:
    ca = services.ca(ctx_of(request))
    return web.Response(body=pem_chain(ca.chain), content_type="application/x-pem-file")


def install(app: web.Application, ctx: ServerContext) -> None:
    try:
        roots = (ctx.config.ca_dir / "root.pem").read_bytes()
    except OSError:
        roots = pem_chain([services.ca(ctx).root])
    app[ROOTS_KEY] = roots
    app.router.add_get(CRL_PATH, crl)
    app.router.add_get("/ca/root.pem", root_pem)
    app.router.add_get("/ca/root.crt", root_der)
    app.router.add_get("/ca/chain.pem", chain_pem)
