"""Thin aiohttp handlers of the sync and the mugshot on the ``kes`` listener: authenticate the
device (``PeerResolver.require_device``, the only way), read a bounded body, parse, call the
service, write the answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from mdm.core.errors import InvalidArgument, ServiceError
from mdm.kes import messages
from mdm.kes.config import KesConfig
from mdm.kes.peer import KesPeer, PeerResolver
from mdm.kes.service_mugshot import MugshotService, media_type
from mdm.kes.service_sync import SyncService, body_hash
from mdm.kes.sync_errors import DEVICE_REFUSALS, SyncTooFrequent
from mdm.server.bodies import read_limited
from mdm.server.middleware import REFUSAL_LOGGED_KEY, json_error

log = logging.getLogger("mdm.kes.sync")

SYNC_PATH = "/kes/v1/sync"
MUGSHOT_PATH = "/kes/v1/mugshot"
_GUID_CHARS = frozenset("0123456789abcdefABCDEF-")


@dataclass
class SyncHandlers:
    sync: SyncService
    mugshots: MugshotService
    peers: Callable[[], PeerResolver]  # read at each request: set by the identity plugin
    settings: Callable[[], KesConfig]


HANDLERS = web.AppKey("mdm_kes_sync_handlers", SyncHandlers)


def _answer(payload: dict[str, object]) -> web.Response:
    return web.Response(body=json.dumps(payload, separators=(",", ":")), content_type="application/json")


async def _refused(handlers: SyncHandlers, request: web.Request, peer: KesPeer, exc: ServiceError) -> None:
    if isinstance(exc, DEVICE_REFUSALS):
        request[REFUSAL_LOGGED_KEY] = True
        await handlers.sync.rejected(exc, device_id=peer.device_id, path=request.path, peer=request.remote)


async def sync_handler(request: web.Request) -> web.Response:
    handlers = request.app[HANDLERS]
    peer = await handlers.peers().require_device(request)
    cfg = handlers.settings()
    body = await read_limited(request, cfg.max_body_bytes, "a sync")
    message = messages.parse("sync", body)
    try:
        answer = await handlers.sync.sync(peer, message, body_hash(body))
    except SyncTooFrequent as exc:
        # Answered from memory: no database work for a storm.
        log.info("kes device %d: sync refused: %s", peer.device_id, exc.message, extra={"code": exc.code})
        response = json_error(exc.status, exc.code, exc.message, **exc.details)
        response.headers["Retry-After"] = str(exc.retry_after)
        request[REFUSAL_LOGGED_KEY] = True
        return response
    except ServiceError as exc:
        await _refused(handlers, request, peer, exc)
        raise
    return _answer(answer)


async def mugshot_handler(request: web.Request) -> web.Response:
    handlers = request.app[HANDLERS]
    peer = await handlers.peers().require_device(request)
    cfg = handlers.settings()
    guid = request.query.get("command_id", "")
    if not (len(guid) == 36 and set(guid) <= _GUID_CHARS):
        raise InvalidArgument("command_id must be the Mugshot command's GUID", field="command_id")
    kind = media_type(request.headers.get("Content-Type", ""))
    data = await read_limited(request, cfg.max_mugshot_bytes, "a mugshot")
    try:
        answer = await handlers.mugshots.receive(peer, guid, kind, data)
    except ServiceError as exc:
        await _refused(handlers, request, peer, exc)
        raise
    return _answer(answer)


def install_routes(app: web.Application, handlers: SyncHandlers) -> None:
    app[HANDLERS] = handlers
    app.router.add_post(SYNC_PATH, sync_handler)
    app.router.add_post(MUGSHOT_PATH, mugshot_handler)
