"""Admin API of bulk operations: send a command to many devices (answered at once with the
operation; a worker queues it in batches), follow it, page its skipped devices, recall it."""

from __future__ import annotations

from aiohttp import web

from mdm.api import schemas as s
from mdm.api import schemas_bulk as b
from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.api.keys import BULK
from mdm.core.bulk import BulkService
from mdm.server.context import ctx_of

router = ApiRouter()


def _bulk(request: web.Request) -> BulkService:
    return ctx_of(request).services[BULK]


@router.route("POST", "/commands", summary="Send a command to many devices (queued in the background)",
              tag="commands", scope="commands:write", body=s.BulkCommandIn, response=b.BulkOut, status=202,
              errors=(404, 422))
async def send_bulk_command(request: web.Request, body: s.BulkCommandIn) -> b.BulkOut:
    target = body.devices
    op = await _bulk(request).create(
        body.type, body.args,
        device_ids=target if isinstance(target, list) else None,
        group=target.group if isinstance(target, s.GroupTarget) else None,
        by=str(request[PRINCIPAL_KEY].name),
    )
    return b.BulkOut.of(op)


@router.route("GET", "/bulk", summary="Bulk operations, newest first", tag="commands", scope="commands:read",
              query=b.BulkListQuery, response=b.BulkPage)
async def list_bulk(request: web.Request, query: b.BulkListQuery) -> b.BulkPage:
    before = int(query.cursor) if query.cursor else None
    rows = await _bulk(request).page(limit=query.limit + 1, before_id=before)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return b.BulkPage(items=[b.BulkOut.of(r) for r in rows], next_cursor=str(rows[-1].id) if more else None)


@router.route("GET", "/bulk/{id}", summary="A bulk operation and its counts (while it runs and after)",
              tag="commands", scope="commands:read", response=b.BulkOut)
async def get_bulk(request: web.Request, id: int) -> b.BulkOut:
    view = await _bulk(request).view(id)
    return b.BulkOut.of(view.op, view)


@router.route("GET", "/bulk/{id}/skipped", summary="The devices a bulk operation skipped, and why",
              tag="commands", scope="commands:read", query=b.SkippedQuery, response=b.SkippedPage)
async def bulk_skipped(request: web.Request, id: int, query: b.SkippedQuery) -> b.SkippedPage:
    rows = await _bulk(request).skipped(id, after=int(query.cursor or 0), limit=query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return b.SkippedPage(items=[b.SkippedOut(device=d, reason=r) for d, r in rows],
                         next_cursor=str(rows[-1][0]) if more else None)


@router.route("DELETE", "/bulk/{id}", summary="Stop a bulk operation and recall what it queued",
              tag="commands", scope="commands:write", response=b.BulkOut, also_ok=(202,))
async def recall_bulk(request: web.Request, id: int) -> b.BulkOut | web.Response:
    """200 once every queued command is recalled; 202 (state ``recalling``) when that takes longer
    than the request's budget: the bulk worker finishes it, ``GET /bulk/{id}`` follows it."""
    service = _bulk(request)
    op = await service.recall(id, by=str(request[PRINCIPAL_KEY].name))
    out = b.BulkOut.of(op, await service.view(id))
    if out.state == "recalling":  # the schema's state name
        return web.json_response(text=out.model_dump_json(by_alias=True), status=202)
    return out
