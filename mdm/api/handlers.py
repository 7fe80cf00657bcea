"""Admin API handlers: thin; they parse (via the framework), call the service layer, shape output."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mdm.api import schemas as s
from mdm.api.auth import TOKEN_CACHE
from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.core import commands, devices, event_log, groups, tokens, users
from mdm.core.command_service import CommandService
from mdm.core.library import LIBRARY, Translators
from mdm.db.enums import Protocol
from mdm.server.context import ctx_of

router = ApiRouter()


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


def _cursor(value: str | None) -> int | None:
    return int(value) if value else None


def _commands(request: web.Request) -> CommandService:
    ctx = ctx_of(request)
    return CommandService(ctx.db, ctx.translators, ctx.pushers)


# ---- devices ------------------------------------------------------------------------------------
@router.route("GET", "/devices", summary="List devices", tag="devices", scope="devices:read",
              query=s.DeviceListQuery, response=s.DevicePage, errors=(404,))
async def list_devices(request: web.Request, query: s.DeviceListQuery) -> s.DevicePage:
    async with ctx_of(request).db.session() as session:
        rows, next_id = await devices.list_devices(
            session, limit=query.limit, after_id=_cursor(query.cursor), protocol=query.protocol,
            status=query.status, user=query.user, group=query.group, q=query.q,
        )
        total = await devices.count_devices(
            session, protocol=query.protocol, status=query.status, user=query.user, group=query.group,
            q=query.q, search_cap=s.SEARCH_COUNT_CAP,
        ) if query.count else None
    capped = total is not None and query.q is not None and total > s.SEARCH_COUNT_CAP
    return s.DevicePage(
        items=[s.DeviceOut.of(d, u) for d, u in rows], next_cursor=None if next_id is None else str(next_id),
        total=s.SEARCH_COUNT_CAP if capped else total, total_capped=capped if total is not None else None,
    )


@router.route("GET", "/devices/{id}", summary="Get one device with its inventory", tag="devices",
              scope="devices:read", response=s.DeviceDetail)
async def get_device(request: web.Request, id: int) -> s.DeviceDetail:
    async with ctx_of(request).db.session() as session:
        device = await devices.get(session, id)
        return s.DeviceDetail.detail(
            device, await devices.owner_name(session, device), await devices.active_command_count(session, id)
        )


@router.route("DELETE", "/devices/{id}", summary="Delete a device record", tag="devices",
              scope="devices:delete", status=204)
async def delete_device(request: web.Request, id: int) -> web.Response:
    async with ctx_of(request).db.transaction() as session:
        await devices.delete(session, id, by=_who(request))
    return web.Response(status=204)


@router.route("PUT", "/devices/{id}/group", summary="Move a device to a group (null: none)", tag="devices",
              scope="devices:write", body=s.DeviceGroupIn, response=s.DeviceOut)
async def set_device_group(request: web.Request, id: int, body: s.DeviceGroupIn) -> s.DeviceOut:
    async with ctx_of(request).db.transaction() as session:
        device = await devices.set_group(session, id, body.group_id)
        return s.DeviceOut.of(device, await devices.owner_name(session, device))


# ---- commands -----------------------------------------------------------------------------------
def _arg_schemas(
    translators: Translators, command_type: str, protocols: frozenset[Protocol]
) -> dict[str, dict[str, Any]]:
    """The argument schema of each protocol whose translator describes it (``arg_schema``; the
    translators cache them, they never change at run time)."""
    out: dict[str, dict[str, Any]] = {}
    for protocol in sorted(protocols):
        schema = translators.arg_schema(command_type, protocol)
        if schema is not None:
            out[protocol.name.lower()] = schema
    return out


@router.route("GET", "/command-types", summary="The command library (?args=true: with argument schemas)",
              tag="commands", scope="commands:read", query=s.CommandTypesQuery, response=s.CommandTypeList)
async def list_command_types(request: web.Request, query: s.CommandTypesQuery) -> s.CommandTypeList:
    translators = ctx_of(request).translators
    return s.CommandTypeList(
        items=[
            s.CommandTypeOut(name=c.name, description=c.description,
                             protocols=sorted(p.name.lower() for p in c.protocols),
                             args=_arg_schemas(translators, c.name, c.protocols) if query.args else None)
            for c in LIBRARY.values()
        ]
    )


@router.route("POST", "/devices/{id}/commands", summary="Send a command to one device", tag="commands",
              scope="commands:write", body=s.CommandIn, response=s.CommandOut, status=201, errors=(409, 422))
async def send_command(request: web.Request, id: int, body: s.CommandIn) -> s.CommandOut:
    command, queued = await _commands(request).send(id, body.type, body.args, by=_who(request))
    return s.CommandOut.of(command, [queued])


@router.route("GET", "/devices/{id}/commands", summary="Command log of a device, each with its journal",
              tag="commands", scope="commands:read", query=s.CommandLogQuery, response=s.CommandPage)
async def device_command_log(request: web.Request, id: int, query: s.CommandLogQuery) -> s.CommandPage:
    async with ctx_of(request).db.session() as session:
        await devices.get(session, id)
        entries = await commands.command_log(
            session, id, limit=query.limit + 1, before_id=_cursor(query.cursor)
        )
    more = len(entries) > query.limit
    entries = entries[: query.limit]
    return s.CommandPage(
        items=[s.CommandOut.of(c, j) for c, j in entries],
        next_cursor=str(entries[-1][0].id) if more else None,
    )


@router.route("GET", "/commands/{guid}", summary="One command with its journal", tag="commands",
              scope="commands:read", response=s.CommandOut)
async def get_command(request: web.Request, guid: str) -> s.CommandOut:
    async with ctx_of(request).db.session() as session:
        command = await commands.get_by_guid(session, guid)
        journal = await commands.journal_of(session, command.id)
        return s.CommandOut.of(command, journal)


@router.route("DELETE", "/commands/{guid}", summary="Recall a command", tag="commands",
              scope="commands:write", response=s.CommandOut, errors=(409,))
async def recall_command(request: web.Request, guid: str) -> s.CommandOut:
    async with ctx_of(request).db.transaction() as session:
        command, journal = await commands.recall_logged(session, guid, by=_who(request))
        return s.CommandOut.of(command, journal)


# ---- events -------------------------------------------------------------------------------------
@router.route("GET", "/events", summary="List events (newest first)", tag="events", scope="events:read",
              query=s.EventQuery, response=s.EventPage)
async def list_events(request: web.Request, query: s.EventQuery) -> s.EventPage:
    async with ctx_of(request).db.session() as session:
        rows, next_id = await event_log.page(
            session, limit=query.limit, before_id=_cursor(query.cursor), after_id=query.after,
            type_=query.type, severity=query.severity, min_severity=query.min_severity,
            device_id=query.device, since=query.since,
        )
    return s.EventPage(
        items=[s.EventOut.of(e) for e in rows], next_cursor=None if next_id is None else str(next_id)
    )


# ---- users & groups -----------------------------------------------------------------------------
@router.route("GET", "/users", summary="List users", tag="users", scope="devices:read",
              query=s.UserListQuery, response=s.UserPage)
async def list_users(request: web.Request, query: s.UserListQuery) -> s.UserPage:
    async with ctx_of(request).db.session() as session:
        rows, next_id = await users.page(
            session, limit=query.limit, after_id=_cursor(query.cursor), name=query.name
        )
    return s.UserPage(
        items=[s.UserOut.of(u) for u in rows], next_cursor=None if next_id is None else str(next_id)
    )


@router.route("POST", "/users", summary="Create a user", tag="users", scope="devices:write", body=s.UserIn,
              response=s.UserOut, status=201, errors=(409,))
async def create_user(request: web.Request, body: s.UserIn) -> s.UserOut:
    async with ctx_of(request).db.transaction() as session:
        user = await users.create(session, body.name, email=body.email, display_name=body.display_name)
        return s.UserOut.of(user)


@router.route("GET", "/users/{id}", summary="Get a user", tag="users", scope="devices:read",
              response=s.UserOut)
async def get_user(request: web.Request, id: int) -> s.UserOut:
    async with ctx_of(request).db.session() as session:
        return s.UserOut.of(await users.get(session, id))


@router.route("DELETE", "/users/{id}", summary="Delete a user (devices keep no owner)", tag="users",
              scope="devices:write", status=204)
async def delete_user(request: web.Request, id: int) -> web.Response:
    async with ctx_of(request).db.transaction() as session:
        await users.delete(session, id)
    return web.Response(status=204)


@router.route("GET", "/groups", summary="List groups", tag="groups", scope="devices:read",
              response=s.GroupList)
async def list_groups(request: web.Request) -> s.GroupList:
    async with ctx_of(request).db.session() as session:
        rows = await groups.all_groups(session)
    return s.GroupList(items=[s.GroupOut.of(g) for g in rows])


@router.route("POST", "/groups", summary="Create a group (nested under parent_id)", tag="groups",
              scope="devices:write", body=s.GroupIn, response=s.GroupOut, status=201, errors=(404, 409))
async def create_group(request: web.Request, body: s.GroupIn) -> s.GroupOut:
    async with ctx_of(request).db.transaction() as session:
        return s.GroupOut.of(await groups.create(session, body.name, body.parent_id))


@router.route("PUT", "/groups/{id}/parent", summary="Move a group under another one (null: top level)",
              tag="groups", scope="devices:write", body=s.GroupParentIn, response=s.GroupOut, errors=(409,))
async def move_group(request: web.Request, id: int, body: s.GroupParentIn) -> s.GroupOut:
    async with ctx_of(request).db.transaction() as session:
        return s.GroupOut.of(await groups.move(session, id, body.parent_id, by=_who(request)))


@router.route("DELETE", "/groups/{id}", summary="Delete an empty group", tag="groups", scope="devices:write",
              status=204, errors=(409,))
async def delete_group(request: web.Request, id: int) -> web.Response:
    async with ctx_of(request).db.transaction() as session:
        await groups.delete(session, id)
    return web.Response(status=204)


# ---- tokens -------------------------------------------------------------------------------------
@router.route("GET", "/tokens", summary="List API tokens (never their secrets)", tag="tokens", scope="admin",
              response=s.TokenList)
async def list_tokens(request: web.Request) -> s.TokenList:
    async with ctx_of(request).db.session() as session:
        rows = await tokens.every(session)
    return s.TokenList(items=[s.TokenOut.of(r) for r in rows])


@router.route("POST", "/tokens", summary="Create a scoped API token; the secret is returned once",
              tag="tokens", scope="admin", body=s.TokenIn, response=s.TokenOut, status=201, errors=(409,))
async def create_token(request: web.Request, body: s.TokenIn) -> s.TokenOut:
    async with ctx_of(request).db.transaction() as session:
        row, secret = await tokens.create(session, body.name, body.scopes)
        return s.TokenOut.of(row, secret)


@router.route("DELETE", "/tokens/{name}", summary="Revoke an API token", tag="tokens", scope="admin",
              response=s.TokenOut)
async def revoke_token(request: web.Request, name: str) -> s.TokenOut:
    async with ctx_of(request).db.transaction() as session:
        row = await tokens.revoke(session, name)
    request.app[TOKEN_CACHE].clear()
    return s.TokenOut.of(row)
