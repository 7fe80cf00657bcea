"""Admin API of ActiveSync mailbox policies: ``/api/v1/eas/policies`` and
``/api/v1/eas/policies/{name}`` (the name URL-encoded; it may hold spaces, quotes, anything).

Reads need ``devices:read``, changes ``devices:write`` (audited by the framework). A change waits
for Exchange (the runner's cmdlet timeout). With ``[eas]`` off: 503 ``eas_disabled``.
"""

from __future__ import annotations

from aiohttp import web

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.eas import schemas_policies as s
from mdm.eas.keys_commands import POLICIES
from mdm.eas.service_policies import EasDisabled, PolicyService
from mdm.server.context import ctx_of

router = ApiRouter()  # joined into the admin API by mdm.plugins
TAG = "eas"
_EXCHANGE_ERRORS = (404, 422, 502, 503, 504)


def _service(request: web.Request) -> PolicyService:
    service = ctx_of(request).services.get(POLICIES)
    if service is None:
        raise EasDisabled("Exchange ActiveSync is not enabled on this server ([eas] enabled = false)")
    return service


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


@router.route("GET", "/eas/policies", summary="ActiveSync mailbox policies known from Exchange", tag=TAG,
              scope="devices:read", query=s.EasPolicyListQuery, response=s.EasPolicyList, errors=(503,))
async def list_eas_policies(request: web.Request, query: s.EasPolicyListQuery) -> s.EasPolicyList:
    views = await _service(request).all(include_vanished=query.include_vanished)
    return s.EasPolicyList(items=[s.EasPolicyOut.of(v) for v in views])


@router.route("POST", "/eas/policies", summary="Create an ActiveSync mailbox policy in Exchange", tag=TAG,
              scope="devices:write", body=s.EasPolicyIn, response=s.EasPolicyOut, status=201,
              errors=_EXCHANGE_ERRORS)
async def create_eas_policy(request: web.Request, body: s.EasPolicyIn) -> s.EasPolicyOut:
    return s.EasPolicyOut.of(await _service(request).create(body.name, body.settings, by=_who(request)))


@router.route("GET", "/eas/policies/{name}", summary="One ActiveSync mailbox policy", tag=TAG,
              scope="devices:read", response=s.EasPolicyOut, errors=(404, 503), text_params=("name",))
async def get_eas_policy(request: web.Request, name: str) -> s.EasPolicyOut:
    return s.EasPolicyOut.of(await _service(request).show(name))


@router.route("PATCH", "/eas/policies/{name}", summary="Change settings of an ActiveSync mailbox policy",
              tag=TAG, scope="devices:write", body=s.EasPolicyPatch, response=s.EasPolicyOut,
              errors=_EXCHANGE_ERRORS, text_params=("name",))
async def edit_eas_policy(request: web.Request, name: str, body: s.EasPolicyPatch) -> s.EasPolicyOut:
    return s.EasPolicyOut.of(await _service(request).edit(name, body.settings, by=_who(request)))


@router.route("DELETE", "/eas/policies/{name}", summary="Delete an ActiveSync mailbox policy from Exchange",
              tag=TAG, scope="devices:write", status=204, errors=_EXCHANGE_ERRORS, text_params=("name",))
async def delete_eas_policy(request: web.Request, name: str) -> web.Response:
    await _service(request).delete(name, by=_who(request))
    return web.Response(status=204)
