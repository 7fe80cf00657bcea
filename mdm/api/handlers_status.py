"""``GET /api/v1/status``: the traffic lights, one per area (``mdm.api.service_status``)."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from mdm.api.framework import ApiRouter
from mdm.api.schemas import Timestamp
from mdm.api.service_status import StatusDocument, StatusReport
from mdm.server.context import ServerContext

STATUS_REPORT = web.AppKey("mdm_status_report", StatusReport)
router = ApiRouter()  # joined into the admin API by mdm.api.plugin.admin_api

LightName = Literal["green", "yellow", "red", "light_blue", "grey"]


class AreaOut(BaseModel):
    area: str = Field(description="enrollment, push, certificates, command_backlog, android, eas, core_link")
    light: LightName
    reason: str | None = Field(description="why the light is not green (null when green)")
    details: dict[str, Any] = Field(description="the figures behind the light")


class StatusOut(BaseModel):
    overall: LightName = Field(description="the worst light of the areas (grey only when all are grey)")
    generated_at: Timestamp = Field(description="when the lights were computed (kept a second or two)")
    areas: list[AreaOut]

    @classmethod
    def of(cls, doc: StatusDocument) -> StatusOut:
        return cls(
            overall=doc.overall.value,
            generated_at=doc.generated_at,
            areas=[AreaOut(area=a.area, light=a.light.value, reason=a.reason, details=dict(a.details))
                   for a in doc.areas],
        )


def install(app: web.Application, ctx: ServerContext) -> None:
    app[STATUS_REPORT] = StatusReport(ctx.db, ctx.status)


@router.route("GET", "/status", summary="Traffic lights: green, yellow, red, light blue or grey per area",
              tag="status", scope="events:read", response=StatusOut)
async def get_status(request: web.Request) -> StatusOut:
    return StatusOut.of(await request.app[STATUS_REPORT].document())
