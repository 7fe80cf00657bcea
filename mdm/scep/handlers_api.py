"""Admin API: pending SCEP requests (approve/reject) and one-time challenges."""

from __future__ import annotations

from aiohttp import web

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.scep import challenges
from mdm.scep.approval_service import ScepApprovals
from mdm.scep.keys import APPROVALS
from mdm.scep.schemas import ChallengeIn, ChallengeOut, ScepRequestList, ScepRequestOut, ScepRequestQuery
from mdm.server.context import ctx_of

router = ApiRouter()  # installed on the admin listener by the API plugin


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


def _approvals(request: web.Request) -> ScepApprovals:
    return ctx_of(request).services[APPROVALS]


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
    rows = await _approvals(request).list_requests(status=query.status, limit=query.limit)
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
    return ScepRequestOut.of(await _approvals(request).approve(id, by=_who(request)))


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
    return ScepRequestOut.of(await _approvals(request).reject(id, by=_who(request)))


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
    secret, expires_at = await challenges.create_for(
        ctx_of(request).db, user=body.user, purpose=body.purpose, ttl_seconds=body.ttl_seconds
    )
    return ChallengeOut(challenge=secret, expires_at=expires_at)
