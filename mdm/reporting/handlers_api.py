"""Admin API of the outbox's dead letters: list them, and put them back for delivery."""

from __future__ import annotations

from aiohttp import web

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.reporting.keys import DEAD_LETTERS
from mdm.reporting.schemas import (
    DeadLetterOut,
    DeadLetterPage,
    DeadLetterQuery,
    ReplayIds,
    ReplayIn,
    ReplayOut,
)
from mdm.reporting.service_dead import DeadLetters
from mdm.server.context import ctx_of

router = ApiRouter()  # joined into the admin API by mdm.plugins


def _service(request: web.Request) -> DeadLetters:
    return ctx_of(request).services[DEAD_LETTERS]


@router.route("GET", "/events/dead-letter", summary="Events given up on (refused or aged out), oldest first",
              tag="events", scope="events:read", query=DeadLetterQuery, response=DeadLetterPage)
async def list_dead_letters(request: web.Request, query: DeadLetterQuery) -> DeadLetterPage:
    rows = await _service(request).page(limit=query.limit, after_id=int(query.cursor or 0), type_=query.type,
                                        device_id=query.device)
    cursor = str(rows[-1].id) if len(rows) == query.limit else None
    return DeadLetterPage(items=[DeadLetterOut.of(r) for r in rows], next_cursor=cursor)


@router.route("POST", "/events/dead-letter/replay", summary="Put dead letters back in the outbox",
              tag="events", scope="events:write", body=ReplayIn, response=ReplayOut)
async def replay_dead_letters(request: web.Request, body: ReplayIn) -> ReplayOut:
    service, by = _service(request), str(request[PRINCIPAL_KEY].name)
    choice = body.root
    if isinstance(choice, ReplayIds):
        count = await service.replay(choice.ids, by=by)
    else:
        count = await service.replay_all(by=by)
    return ReplayOut(requeued=count)
