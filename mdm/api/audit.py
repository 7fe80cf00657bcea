"""Audit of the admin API (``mdm.core.audit``): the framework runs every mutating request of an
authenticated token through ``audited``, and every refused scope through ``denied``.

- The change and its ``admin_action`` event (outcome done) commit together: the request's audit is
  pending (``mdm.db.audit_context.PENDING``) while the handler runs, and the first of its
  transactions that changes something writes it before committing. A rollback takes both.
- A request that failed (5xx) having changed nothing is recorded in a transaction of its own,
  outcome failed, with the error's code (never its message, which may repeat the input).
- A token lacking the route's scope: ``admin_action_denied`` (403), in a transaction of its own.
- Other refusals (400, 404, 409, ...) change nothing and write nothing: bad input gets its 4xx and
  the middleware's log line, as everywhere else. An unauthenticated request (401) never gets here.
- Read-only methods (GET, HEAD) are not audited.

The source is the TCP peer, or the address a trusted proxy of the admin listener
(``listeners.admin.trusted_proxies``) forwards when the peer is one; a forwarded header from
anywhere else is ignored.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from mdm.core import audit
from mdm.core.audit import Action, Actor
from mdm.core.errors import ServiceError
from mdm.core.tokens import Principal
from mdm.db.audit_context import PENDING, Note
from mdm.logs import request_id_var
from mdm.server import peers
from mdm.server.context import ctx_of

log = logging.getLogger(__name__)
READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


@functools.lru_cache(maxsize=4)
def _networks(items: tuple[str, ...]) -> tuple[peers.Network, ...]:
    return peers.networks(items)


def actor(request: web.Request, principal: Principal) -> Actor:
    peer = peers.peer_address(request) or "unknown"
    if peers.peer_in(request, _networks(tuple(ctx_of(request).config.listeners.admin.trusted_proxies))):
        client = peers.forwarded_for(request)
        if client is not None:
            return Actor(principal.name, "api", client, token_id=principal.token_id, proxy=peer)
    return Actor(principal.name, "api", peer, token_id=principal.token_id)


def action(request: web.Request, principal: Principal, operation: str, route: str) -> Action:
    rid = request_id_var.get()
    return Action(actor(request, principal), operation, method=request.method, route=route,
                  request_id=None if rid == "-" else rid)


async def denied(request: web.Request, principal: Principal, operation: str, route: str, scope: str) -> None:
    """Record a refused scope; a database failure is logged, the 403 stands."""
    done = action(request, principal, operation, route)
    target = audit.target_of(
        {k: int(v) if k == "id" and v.isascii() and v.isdigit() and len(v) <= 19 else v
         for k, v in request.match_info.items()},
        fields=None,
    )
    try:
        async with ctx_of(request).db.transaction() as session:
            audit.record_denied(session, replace(done, target=target), scope)
    except Exception as exc:
        log.warning("audit event of a refused scope not recorded: %s", type(exc).__name__)


async def audited(
    request: web.Request,
    done: Action,
    arguments: Callable[[], Awaitable[dict[str, Any]]],
    run: Callable[[dict[str, Any]], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Parse the arguments (``arguments``), then ``run`` the handler with the audit pending."""
    pending = None
    try:
        kwargs = await arguments()
        done = replace(done, target=_target(kwargs))
        pending = audit.pending(done)
        token = PENDING.set(pending)
        try:
            response = await run(kwargs)
        finally:
            pending.closed = True
            PENDING.reset(token)
    except ServiceError as exc:
        if exc.status >= 500 and (pending is None or not pending.written):
            await _failed(request, done, exc.status, exc.code)
        raise
    except web.HTTPException as exc:
        if exc.status >= 500 and (pending is None or not pending.written):
            await _failed(request, done, exc.status, f"http_{exc.status}")
        raise
    except Exception:
        if pending is None or not pending.written:
            await _failed(request, done, 500, "internal")
        raise
    if response.status >= 500 and not pending.written:
        await _failed(request, done, response.status, f"http_{response.status}")
    return response


def _target(kwargs: Mapping[str, Any]) -> dict[str, Note]:
    """Path parameters whole (ids, GUIDs, serials, names), and the identifying fields of the body."""
    target = audit.target_of({k: v for k, v in kwargs.items() if k not in ("body", "query")}, fields=None)
    body = kwargs.get("body")
    if body is not None:
        target.update(audit.target_of(body.model_dump(), audit.TARGET_FIELDS))
    return target


async def _failed(request: web.Request, done: Action, status: int, code: str) -> None:
    """A mutating request that failed (5xx) having committed nothing, recorded on its own."""
    try:
        async with ctx_of(request).db.transaction() as session:
            audit.record(session, done, outcome="failed", status=status, error=code)
    except Exception as exc:
        log.warning("audit event of a failed request not recorded: %s", type(exc).__name__)
