"""Admin API: pending SCEP requests (approve/reject) and one-time challenges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.core.errors import NotFound
from mdm.db.models import User
from mdm.scep import challenges, service
from mdm.scep.tables import ScepTransaction
from mdm.server.context import ctx_of

router = ApiRouter()  # installed on the admin listener by the API plugin


class ScepRequestOut(BaseModel):
    id: int
    transaction_id: str
    message_type: str
    status: str
    subject: str
    user_id: int | None
    renews_serial: str | None
    cert_serial: str | None
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None

    @classmethod
    def of(cls, row: ScepTransaction) -> ScepRequestOut:
        return cls(
            id=row.id,
            transaction_id=row.transaction_id,
            message_type=row.message_type,
            status=row.status,
            subject=row.subject,
            user_id=row.user_id,
            renews_serial=row.renews_serial,
            cert_serial=row.cert_serial,
            created_at=row.created_at,
            decided_at=row.decided_at,
            decided_by=row.decided_by,
        )


class ScepRequestList(BaseModel):
    items: list[ScepRequestOut]


class ScepRequestQuery(BaseModel):
    status: Literal["pending", "issued", "rejected"] | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ChallengeIn(BaseModel):
    user: str | None = Field(default=None, description="owner of the certificate issued with it")
    purpose: str = Field(default="admin", min_length=1, max_length=64)
    ttl_seconds: int = Field(default=3600, ge=60, le=challenges.MAX_TTL_SECONDS)


class ChallengeOut(BaseModel):
    challenge: str
    expires_at: datetime


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


@router.route(
    "GET",
    "/scep/requests",
    summary="SCEP requests (pending approval, issued, rejected)",
    tag="pki",
    scope="pki",
    query=ScepRequestQuery,
    response=ScepRequestList,
)
async def list_scep_requests(request: web.Request, query: ScepRequestQuery) -> ScepRequestList:
    rows = await service.list_requests(ctx_of(request), status=query.status, limit=query.limit)
    return ScepRequestList(items=[ScepRequestOut.of(r) for r in rows])


@router.route(
    "POST",
    "/scep/requests/{id}/approve",
    summary="Approve a pending SCEP request (issues it)",
    tag="pki",
    scope="pki",
    response=ScepRequestOut,
    errors=(409,),
)
async def approve_scep_request(request: web.Request, id: int) -> ScepRequestOut:
    return ScepRequestOut.of(await service.approve(ctx_of(request), id, by=_who(request)))


@router.route(
    "POST",
    "/scep/requests/{id}/reject",
    summary="Reject a pending SCEP request",
    tag="pki",
    scope="pki",
    response=ScepRequestOut,
    errors=(409,),
)
async def reject_scep_request(request: web.Request, id: int) -> ScepRequestOut:
    return ScepRequestOut.of(await service.reject(ctx_of(request), id, by=_who(request)))


@router.route(
    "POST",
    "/scep/challenges",
    summary="Create a one-time SCEP challenge (shown once)",
    tag="pki",
    scope="enroll",
    body=ChallengeIn,
    response=ChallengeOut,
    status=201,
    errors=(404,),
)
async def create_scep_challenge(request: web.Request, body: ChallengeIn) -> ChallengeOut:
    async with ctx_of(request).db.transaction() as session:
        user_id = None
        if body.user is not None:
            user_id = await session.scalar(select(User.id).where(User.name == body.user))
            if user_id is None:
                raise NotFound(f"no user {body.user!r}")
        secret = await challenges.create_challenge(
            session, user_id=user_id, purpose=body.purpose, ttl_seconds=body.ttl_seconds
        )
    return ChallengeOut(challenge=secret, expires_at=datetime.now(UTC) + timedelta(seconds=body.ttl_seconds))
