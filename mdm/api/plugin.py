"""Registers the admin API, health, readiness, metrics and the OpenAPI document on the admin
listener; builds the bulk-operation service (``BULK``) and runs its worker. Health, readiness
and the document are public; /metrics (it tells the size of the fleet and of the queues) needs the
``metrics:read`` scope unless the peer is in ``api.metrics_allow``."""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mdm import __version__
from mdm.api import schemas as s
from mdm.api.auth import TOKEN_CACHE, TokenCache
from mdm.api.framework import ApiRouter
from mdm.api.handlers import router as core_router
from mdm.api.handlers_bulk import router as bulk_router
from mdm.api.handlers_status import install as install_status
from mdm.api.handlers_status import router as status_router
from mdm.api.keys import BULK, TOKENS
from mdm.core import fleet_metrics, metrics, tokens
from mdm.core.bulk import BulkService
from mdm.core.bulk_config import BulkConfig
from mdm.core.identity_notify import listen
from mdm.core.status_commands import CommandBacklogSource
from mdm.db.engine import DatabaseUnavailable
from mdm.server import peers
from mdm.server.context import ServerContext, ctx_of
from mdm.server.plugin import Plugin, Worker

OPENAPI_KEY = web.AppKey("mdm_openapi", str)
METRICS_ALLOW = web.AppKey("mdm_metrics_allow", tuple)
router = ApiRouter()  # health, readiness, metrics and the document itself


@router.route("GET", "/healthz", summary="Liveness: the process answers", tag="health", scope=None,
              response=s.Health, prefixed=False)
async def healthz(request: web.Request) -> s.Health:
    return s.Health(status="ok")


@router.route("GET", "/readyz", summary="Readiness: the database answers", tag="health", scope=None,
              response=s.Health, prefixed=False, errors=(503,))
async def readyz(request: web.Request) -> web.Response | s.Health:
    try:
        await ctx_of(request).db.check(timeout=2.0)
    except DatabaseUnavailable as exc:
        body = s.Health(status="unavailable", checks={"database": str(exc)})
        return web.Response(text=body.model_dump_json(), status=503, content_type="application/json")
    return s.Health(status="ok", checks={"database": "ok"})


def _metrics_allowed(request: web.Request) -> bool:
    return peers.peer_in(request, request.app[METRICS_ALLOW])


@router.route("GET", "/metrics", summary="Prometheus metrics", tag="health", scope="metrics:read",
              prefixed=False, raw_response="text/plain", open_to=_metrics_allowed,
              open_note="Addresses in `api.metrics_allow` need no token.")
async def prometheus_metrics(request: web.Request) -> web.Response:
    async with ctx_of(request).db.session() as session:
        await fleet_metrics.refresh(session)
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@router.route("GET", "/api/openapi.json", summary="This document", tag="health", scope=None, prefixed=False,
              raw_response="application/json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(text=request.app[OPENAPI_KEY], content_type="application/json")


def admin_api(*feature_routers: ApiRouter) -> ApiRouter:
    """The whole admin API: these routes, the core resources and each feature's routers."""
    return ApiRouter.combine(router, core_router, bulk_router, status_router, *feature_routers)


def openapi(api: ApiRouter) -> dict[str, object]:
    return api.openapi("mdm admin API", __version__)


def plugin(api: ApiRouter) -> Plugin:
    """The admin listener's API (``admin_api``: these routes and the features' composed)."""
    document = json.dumps(openapi(api))

    def install(app: web.Application, ctx: ServerContext) -> None:
        app[TOKEN_CACHE] = ctx.services[TOKENS]
        app[METRICS_ALLOW] = peers.networks(ctx.config.api.metrics_allow)
        app[OPENAPI_KEY] = document
        install_status(app, ctx)
        api.install(app)

    async def start_tokens(ctx: ServerContext) -> None:
        # On PostgreSQL other replicas revoke too: nothing is cached until their NOTIFY is heard.
        ctx.services[TOKENS] = TokenCache(live=ctx.db.is_sqlite)

    async def listen_for_revocations(ctx: ServerContext) -> None:
        """Other replicas' token revocations (PostgreSQL NOTIFY) clear this replica's cache."""
        if ctx.db.is_sqlite:
            return  # one process: the revoking request clears the cache
        cache = ctx.services[TOKENS]
        await listen(ctx.db.url, {tokens.CHANGED_CHANNEL: cache.changed}, cache.set_live, what="API token")

    async def start_bulk(ctx: ServerContext) -> None:
        settings = ctx.config.section(BulkConfig)
        ctx.services[BULK] = BulkService(ctx.db, ctx.translators, ctx.pushers,
                                         batch_size=settings.batch_size, idle_seconds=settings.idle_seconds)
        ctx.services[BULK].recall_seconds = settings.recall_seconds
        ctx.status.register(CommandBacklogSource())

    async def run_bulk(ctx: ServerContext) -> None:
        await ctx.services[BULK].run()

    return Plugin(name="api", routes={"admin": install}, startup=[start_tokens, start_bulk],
                  workers=[Worker("bulk", run_bulk), Worker("token-revocations", listen_for_revocations)])
