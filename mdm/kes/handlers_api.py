"""Admin API of KES devices: the agent's state, and the pictures of Mugshot commands."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from mdm.api.framework import ApiRouter
from mdm.core.errors import NotFound
from mdm.kes.keys_sync import MUGSHOTS, SYNC
from mdm.server.context import ctx_of

router = ApiRouter()  # joined into the admin API by mdm.plugins


class MugshotQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")


class MugshotOut(BaseModel):
    id: int
    device_id: int
    command: str
    content_type: str
    size: int
    taken_at: datetime | None
    received_at: datetime


class MugshotPage(BaseModel):
    items: list[MugshotOut]
    next_cursor: str | None


class KesAgentState(BaseModel):
    device_id: int
    status: str
    agent_version: str | None
    registered_at: datetime | None
    bound: bool
    last_sync_at: datetime | None
    sync_interval: int
    policy_desired_version: str | None = Field(description="the effective policy's version; null: none")
    policy_sent_version: str | None
    policy_applied_version: str | None
    renew_requested_at: datetime | None
    long_polling: bool = Field(description="a long-poll sync of the device is held open on this replica")
    agent_status: dict[str, Any] | None
    location: dict[str, Any] | None


@router.route("GET", "/kes/devices/{id}", summary="A KES device's agent: last sync, policy sent and applied",
              tag="kes", scope="devices:read", response=KesAgentState)
async def kes_agent_state(request: web.Request, id: int) -> KesAgentState:
    return KesAgentState(**await ctx_of(request).services[SYNC].agent_state(id))


@router.route("GET", "/devices/{id}/mugshots", summary="A device's Mugshot pictures, newest first",
              tag="kes", scope="devices:read", query=MugshotQuery, response=MugshotPage)
async def list_mugshots(request: web.Request, id: int, query: MugshotQuery) -> MugshotPage:
    before = int(query.cursor) if query.cursor else None
    rows, more = await ctx_of(request).services[MUGSHOTS].list(id, limit=query.limit, before_id=before)
    items = [MugshotOut(id=r.id, device_id=r.device_id, command=r.command_guid, content_type=r.content_type,
                        size=r.size, taken_at=r.taken_at, received_at=r.received_at) for r in rows]
    return MugshotPage(items=items, next_cursor=str(rows[-1].id) if more and rows else None)


@router.route("GET", "/devices/{id}/mugshots/{mugshot_id}", summary="One Mugshot picture (JPEG or PNG)",
              tag="kes", scope="devices:read", raw_response="image/jpeg")
async def get_mugshot(request: web.Request, id: int, mugshot_id: str) -> web.Response:
    if not mugshot_id.isdigit() or len(mugshot_id) > 18:
        raise NotFound(f"no mugshot {mugshot_id[:32]}")
    mugshot = await ctx_of(request).services[MUGSHOTS].picture(id, int(mugshot_id))
    return web.Response(body=mugshot.data, content_type=mugshot.content_type,
                        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})
