"""Admin API of policies: ``/api/v1/policies`` (policies and their profiles), desired vs applied per
device (``/api/v1/policies/devices/{id}``) and device tags (``/api/v1/devices/{id}/tags``).

Reads need the scope ``devices:read``, changes ``devices:write``. A change may name the revision it
was made against, in the body (``revision``) or as ``If-Match``; a stale one is a 409.
"""

from __future__ import annotations

from aiohttp import web

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.core.errors import InvalidArgument, NotFound
from mdm.policies import schemas as s
from mdm.policies.keys import DEVICES, SERVICE
from mdm.policies.service import PolicyService
from mdm.policies.views import PolicyChange, ProfileChange
from mdm.server.context import ctx_of

router = ApiRouter()  # joined into the admin API by mdm.plugins
TAG = "policies"


class InvalidIfMatch(InvalidArgument):
    code = "invalid_if_match"


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


def _service(request: web.Request) -> PolicyService:
    return ctx_of(request).services[SERVICE]


def expected_revision(request: web.Request, body_revision: int | None = None) -> int | None:
    """The revision a change was made against: ``If-Match: "7"`` (or ``7``) and/or the body's."""
    header = request.headers.get("If-Match")
    from_header = None
    if header is not None:
        text = header.strip()
        if text.startswith("W/"):
            text = text[2:]
        text = text.strip('"')
        if not (text.isascii() and text.isdigit()) or len(text) > 10:
            raise InvalidIfMatch('If-Match must be a policy revision, e.g. "7"')
        from_header = int(text)
    if from_header is not None and body_revision is not None and from_header != body_revision:
        raise InvalidIfMatch(f"If-Match {from_header} and revision {body_revision} disagree")
    return from_header if from_header is not None else body_revision


# ---- policies -------------------------------------------------------------------------------------
@router.route("GET", "/policies", summary="List policies (?group=ID: the policy of that group)", tag=TAG,
              scope="devices:read", query=s.PolicyListQuery, response=s.PolicyList)
async def list_policies(request: web.Request, query: s.PolicyListQuery) -> s.PolicyList:
    return s.PolicyList(items=[s.PolicyOut.of(v) for v in await _service(request).list(query.group)])


@router.route("POST", "/policies", summary="Create the policy of a group (one per group)", tag=TAG,
              scope="devices:write", body=s.PolicyIn, response=s.PolicyOut, status=201,
              errors=(404, 409, 422))
async def create_policy(request: web.Request, body: s.PolicyIn) -> s.PolicyOut:
    view = await _service(request).create(
        body.group_id, body.name, s.settings_of(body.settings) or {}, active=body.active,
        inherit=body.inherit, force_inheritance=body.force_inheritance, by=_who(request),
    )
    return s.PolicyOut.of(view)


@router.route("GET", "/policies/{id}", summary="One policy with its profiles", tag=TAG, scope="devices:read",
              response=s.PolicyOut)
async def get_policy(request: web.Request, id: int) -> s.PolicyOut:
    return s.PolicyOut.of(await _service(request).get(id))


@router.route("PATCH", "/policies/{id}", summary="Change settings, locks, name or inheritance flags",
              tag=TAG, scope="devices:write", body=s.PolicyPatch, response=s.PolicyOut, errors=(409, 422))
async def update_policy(request: web.Request, id: int, body: s.PolicyPatch) -> s.PolicyOut:
    change = PolicyChange(
        name=body.name, inherit=body.inherit, force_inheritance=body.force_inheritance,
        settings=s.settings_of(body.settings), set=s.settings_of(body.set) or {}, unset=body.unset,
        lock=body.lock, unlock=body.unlock,
    )
    view = await _service(request).update(
        id, change, expected=expected_revision(request, body.revision), by=_who(request)
    )
    return s.PolicyOut.of(view)


@router.route("POST", "/policies/{id}/activate", summary="Activate a policy (applied and inherited)", tag=TAG,
              scope="devices:write", response=s.PolicyOut, errors=(409,))
async def activate_policy(request: web.Request, id: int) -> s.PolicyOut:
    view = await _service(request).set_active(id, True, expected=expected_revision(request), by=_who(request))
    return s.PolicyOut.of(view)


@router.route("POST", "/policies/{id}/deactivate",
              summary="Deactivate a policy (neither applied nor inherited)", tag=TAG,
              scope="devices:write", response=s.PolicyOut, errors=(409,))
async def deactivate_policy(request: web.Request, id: int) -> s.PolicyOut:
    view = await _service(request).set_active(
        id, False, expected=expected_revision(request), by=_who(request)
    )
    return s.PolicyOut.of(view)


@router.route("DELETE", "/policies/{id}", summary="Delete a policy and its profiles", tag=TAG,
              scope="devices:write", status=204, errors=(409,))
async def delete_policy(request: web.Request, id: int) -> web.Response:
    await _service(request).delete(id, expected=expected_revision(request), by=_who(request))
    return web.Response(status=204)


# ---- profiles -------------------------------------------------------------------------------------
@router.route("GET", "/policies/{id}/profiles", summary="The profiles of a policy (highest priority first)",
              tag=TAG, scope="devices:read", response=s.ProfileList)
async def list_profiles(request: web.Request, id: int) -> s.ProfileList:
    return s.ProfileList(items=[s.ProfileOut.of(p) for p in (await _service(request).get(id)).profiles])


@router.route("POST", "/policies/{id}/profiles", summary="Add a profile to a policy", tag=TAG,
              scope="devices:write", body=s.ProfileIn, response=s.ProfileOut, status=201, errors=(409, 422))
async def create_profile(request: web.Request, id: int, body: s.ProfileIn) -> s.ProfileOut:
    change = ProfileChange(priority=body.priority, active=body.active,
                           conditions=body.conditions.model_dump(), settings=s.settings_of(body.settings))
    view = await _service(request).add_profile(
        id, body.name, change, expected=expected_revision(request, body.revision), by=_who(request)
    )
    return s.ProfileOut.of(view)


@router.route("GET", "/policies/{id}/profiles/{name}", summary="One profile of a policy", tag=TAG,
              scope="devices:read", response=s.ProfileOut)
async def get_profile(request: web.Request, id: int, name: str) -> s.ProfileOut:
    for profile in (await _service(request).get(id)).profiles:
        if profile.name == name:
            return s.ProfileOut.of(profile)
    raise NotFound(f"policy {id} has no profile {name!r}")


@router.route("PATCH", "/policies/{id}/profiles/{name}", summary="Change a profile", tag=TAG,
              scope="devices:write", body=s.ProfilePatch, response=s.ProfileOut, errors=(409, 422))
async def update_profile(request: web.Request, id: int, name: str, body: s.ProfilePatch) -> s.ProfileOut:
    change = ProfileChange(
        priority=body.priority, active=body.active,
        conditions=None if body.conditions is None else body.conditions.model_dump(),
        settings=s.settings_of(body.settings), set=s.settings_of(body.set) or {}, unset=body.unset,
    )
    view = await _service(request).update_profile(
        id, name, change, expected=expected_revision(request, body.revision), by=_who(request)
    )
    return s.ProfileOut.of(view)


@router.route("DELETE", "/policies/{id}/profiles/{name}", summary="Remove a profile", tag=TAG,
              scope="devices:write", status=204, errors=(409,))
async def delete_profile(request: web.Request, id: int, name: str) -> web.Response:
    await _service(request).delete_profile(id, name, expected=expected_revision(request), by=_who(request))
    return web.Response(status=204)


# ---- devices --------------------------------------------------------------------------------------
@router.route("GET", "/policies/devices/{id}", summary="Desired vs applied policy of a device", tag=TAG,
              scope="devices:read", response=s.DevicePolicyOut)
async def device_policy(request: web.Request, id: int) -> s.DevicePolicyOut:
    return s.DevicePolicyOut.of(await ctx_of(request).services[DEVICES].view(id))


@router.route("GET", "/devices/{id}/tags", summary="A device's tags", tag="devices", scope="devices:read",
              response=s.TagsOut)
async def get_device_tags(request: web.Request, id: int) -> s.TagsOut:
    return s.TagsOut(device_id=id, tags=await ctx_of(request).services[DEVICES].tags(id))


@router.route("PUT", "/devices/{id}/tags", summary="Replace a device's tags", tag="devices",
              scope="devices:write", body=s.TagsIn, response=s.TagsOut, errors=(422,))
async def set_device_tags(request: web.Request, id: int, body: s.TagsIn) -> s.TagsOut:
    tags = await ctx_of(request).services[DEVICES].set_tags(id, body.tags, by=_who(request))
    return s.TagsOut(device_id=id, tags=tags)
