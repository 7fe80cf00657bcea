"""Admin API handlers: thin; they parse (via the framework), call the service layer, shape output."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from mdm.api import schemas as s
from mdm.api.auth import TOKEN_CACHE
from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.core import commands, devices, groups, tokens
from mdm.core.errors import Conflict, NotFound
from mdm.core.library import LIBRARY, translator_for
from mdm.db.models import ApiToken, Device, Event, Group, Protocol, User
from mdm.server.context import ctx_of

router = ApiRouter()


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


def _cursor(value: str | None) -> int | None:
    return int(value) if value else None


# ---- devices ------------------------------------------------------------------------------------
@router.route("GET", "/devices", summary="List devices", tag="devices", scope="devices:read",
              query=s.DeviceListQuery, response=s.DevicePage, errors=(404,))
async def list_devices(request: web.Request, query: s.DeviceListQuery) -> s.DevicePage:
    async with ctx_of(request).db.session() as session:
        rows, next_id = await devices.list_devices(
            session, limit=query.limit, after_id=_cursor(query.cursor), protocol=query.protocol,
            status=query.status, user=query.user, group=query.group, q=query.q,
        )
    return s.DevicePage(
        items=[s.DeviceOut.of(d, u) for d, u in rows], next_cursor=None if next_id is None else str(next_id)
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
              scope="devices:write", status=204)
async def delete_device(request: web.Request, id: int) -> web.Response:
    async with ctx_of(request).db.transaction() as session:
        await devices.delete(session, id, by=_who(request))
    return web.Response(status=204)


@router.route("PUT", "/devices/{id}/group", summary="Move a device to a group (null: none)", tag="devices",
              scope="devices:write", body=s.DeviceGroupIn, response=s.DeviceOut)
async def set_device_group(request: web.Request, id: int, body: s.DeviceGroupIn) -> s.DeviceOut:
    async with ctx_of(request).db.transaction() as session:
        device = await devices.get(session, id)
        if body.group_id is not None and await session.get(Group, body.group_id) is None:
            raise NotFound(f"no group {body.group_id}")
        device.group_id = body.group_id
        return s.DeviceOut.of(device, await devices.owner_name(session, device))


# ---- commands -----------------------------------------------------------------------------------
def _arg_schemas(command_type: str, protocols: frozenset[Protocol]) -> dict[str, dict[str, Any]]:
    """The argument schema of each protocol whose translator describes it (``arg_schema``; the
    translators cache them, they never change at run time)."""
    out: dict[str, dict[str, Any]] = {}
    for protocol in sorted(protocols):
        describe = getattr(translator_for(protocol), "arg_schema", None)
        schema = describe(command_type) if callable(describe) else None
        if schema is not None:
            out[protocol.name.lower()] = schema
    return out


@router.route("GET", "/command-types", summary="The command library (?args=true: with argument schemas)",
              tag="commands", scope="commands:read", query=s.CommandTypesQuery, response=s.CommandTypeList)
async def list_command_types(request: web.Request, query: s.CommandTypesQuery) -> s.CommandTypeList:
    return s.CommandTypeList(
        items=[
            s.CommandTypeOut(name=c.name, description=c.description,
                             protocols=sorted(p.name.lower() for p in c.protocols),
                             args=_arg_schemas(c.name, c.protocols) if query.args else None)
            for c in LIBRARY.values()
        ]
    )


@router.route("POST", "/devices/{id}/commands", summary="Send a command to one device", tag="commands",
              scope="commands:write", body=s.CommandIn, response=s.CommandOut, status=201, errors=(409, 422))
async def send_command(request: web.Request, id: int, body: s.CommandIn) -> s.CommandOut:
    async with ctx_of(request).db.transaction() as session:
        device = await devices.get(session, id)
        command, queued = await commands.enqueue_logged(
            session, device, body.type, body.args, created_by=_who(request)
        )
    return s.CommandOut.of(command, [queued])


@router.route("POST", "/commands", summary="Send a command to many devices", tag="commands",
              scope="commands:write", body=s.BulkCommandIn, response=s.BulkCommandOut, status=201,
              errors=(404,))
async def send_bulk_command(request: web.Request, body: s.BulkCommandIn) -> s.BulkCommandOut:
    async with ctx_of(request).db.transaction() as session:
        stmt = select(Device).order_by(Device.id)
        missing: list[int] = []
        if isinstance(body.devices, list):
            wanted = sorted(set(body.devices))
            stmt = stmt.where(Device.id.in_(wanted))
        elif isinstance(body.devices, s.GroupTarget):
            group_ids = await devices.group_and_descendants(session, body.devices.group)
            stmt = stmt.where(Device.group_id.in_(group_ids))
        targets = list((await session.scalars(stmt)).all())
        if isinstance(body.devices, list):
            found = {d.id for d in targets}
            missing = [i for i in sorted(set(body.devices)) if i not in found]
        result = await commands.enqueue_bulk(session, targets, body.type, body.args, created_by=_who(request))
        skipped = [s.SkippedDevice(**x) for x in result.skipped]
        skipped += [s.SkippedDevice(device=i, reason="no such device") for i in missing]
        return s.BulkCommandOut(created=[s.CommandOut.of(c) for c in result.created], skipped=skipped)


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
        command = await commands.recall(session, guid, by=_who(request))
        await session.flush()
        return s.CommandOut.of(command, await commands.journal_of(session, command.id))


# ---- events -------------------------------------------------------------------------------------
@router.route("GET", "/events", summary="List events (newest first)", tag="events", scope="events:read",
              query=s.EventQuery, response=s.EventPage)
async def list_events(request: web.Request, query: s.EventQuery) -> s.EventPage:
    stmt = select(Event).order_by(Event.id.desc())
    if query.cursor:
        stmt = stmt.where(Event.id < int(query.cursor))
    if query.after is not None:
        stmt = stmt.where(Event.id > query.after)
    if query.type:
        stmt = stmt.where(Event.type == query.type)
    if query.severity:
        stmt = stmt.where(Event.severity == query.severity)
    if query.min_severity:
        at_least = s.SEVERITY_ORDER[s.SEVERITY_ORDER.index(query.min_severity):]
        stmt = stmt.where(Event.severity.in_(at_least))
    if query.device:
        stmt = stmt.where(Event.device_id == query.device)
    if query.since:
        stmt = stmt.where(Event.created_at >= query.since)
    async with ctx_of(request).db.session() as session:
        rows = list((await session.scalars(stmt.limit(query.limit + 1))).all())
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return s.EventPage(items=[s.EventOut.of(e) for e in rows], next_cursor=str(rows[-1].id) if more else None)


# ---- users & groups -----------------------------------------------------------------------------
@router.route("GET", "/users", summary="List users", tag="users", scope="devices:read",
              query=s.UserListQuery, response=s.UserPage)
async def list_users(request: web.Request, query: s.UserListQuery) -> s.UserPage:
    stmt = select(User).order_by(User.id)
    if query.cursor:
        stmt = stmt.where(User.id > int(query.cursor))
    if query.name is not None:
        stmt = stmt.where(User.name == query.name)
    async with ctx_of(request).db.session() as session:
        rows = list((await session.scalars(stmt.limit(query.limit + 1))).all())
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return s.UserPage(items=[s.UserOut.of(u) for u in rows], next_cursor=str(rows[-1].id) if more else None)


@router.route("POST", "/users", summary="Create a user", tag="users", scope="devices:write", body=s.UserIn,
              response=s.UserOut, status=201, errors=(409,))
async def create_user(request: web.Request, body: s.UserIn) -> s.UserOut:
    async with ctx_of(request).db.transaction() as session:
        if await session.scalar(select(User.id).where(User.name == body.name)) is not None:
            raise Conflict(f"user {body.name!r} already exists")
        user = User(name=body.name, email=body.email, display_name=body.display_name)
        session.add(user)
        await session.flush()
        return s.UserOut.of(user)


@router.route("GET", "/users/{id}", summary="Get a user", tag="users", scope="devices:read",
              response=s.UserOut)
async def get_user(request: web.Request, id: int) -> s.UserOut:
    async with ctx_of(request).db.session() as session:
        user = await session.get(User, id)
        if user is None:
            raise NotFound(f"no user {id}")
        return s.UserOut.of(user)


@router.route("DELETE", "/users/{id}", summary="Delete a user (devices keep no owner)", tag="users",
              scope="devices:write", status=204)
async def delete_user(request: web.Request, id: int) -> web.Response:
    async with ctx_of(request).db.transaction() as session:
        user = await session.get(User, id)
        if user is None:
            raise NotFound(f"no user {id}")
        await session.delete(user)
    return web.Response(status=204)


@router.route("GET", "/groups", summary="List groups", tag="groups", scope="devices:read",
              response=s.GroupList)
async def list_groups(request: web.Request) -> s.GroupList:
    async with ctx_of(request).db.session() as session:
        rows = (await session.scalars(select(Group).order_by(Group.id))).all()
    return s.GroupList(items=[s.GroupOut.of(g) for g in rows])


@router.route("POST", "/groups", summary="Create a group (nested under parent_id)", tag="groups",
              scope="devices:write", body=s.GroupIn, response=s.GroupOut, status=201, errors=(404, 409))
async def create_group(request: web.Request, body: s.GroupIn) -> s.GroupOut:
    async with ctx_of(request).db.transaction() as session:
        if body.parent_id is not None and await session.get(Group, body.parent_id) is None:
            raise NotFound(f"no parent group {body.parent_id}")
        clash = await session.scalar(
            select(Group.id).where(
                Group.name == body.name,
                Group.parent_id.is_(None) if body.parent_id is None else Group.parent_id == body.parent_id,
            )
        )
        if clash is not None:
            raise Conflict(f"group {body.name!r} already exists there")
        group = Group(name=body.name, parent_id=body.parent_id)
        session.add(group)
        await session.flush()
        return s.GroupOut.of(group)


@router.route("PUT", "/groups/{id}/parent", summary="Move a group under another one (null: top level)",
              tag="groups", scope="devices:write", body=s.GroupParentIn, response=s.GroupOut, errors=(409,))
async def move_group(request: web.Request, id: int, body: s.GroupParentIn) -> s.GroupOut:
    async with ctx_of(request).db.transaction() as session:
        return s.GroupOut.of(await groups.move(session, id, body.parent_id, by=_who(request)))


@router.route("DELETE", "/groups/{id}", summary="Delete an empty group", tag="groups", scope="devices:write",
              status=204, errors=(409,))
async def delete_group(request: web.Request, id: int) -> web.Response:
    async with ctx_of(request).db.transaction() as session:
        group = await session.get(Group, id)
        if group is None:
            raise NotFound(f"no group {id}")
        if await session.scalar(select(Group.id).where(Group.parent_id == id).limit(1)) is not None:
            raise Conflict(f"group {id} has subgroups; delete or move them first")
        if await session.scalar(select(Device.id).where(Device.group_id == id).limit(1)) is not None:
            raise Conflict(f"group {id} still holds devices; move them first")
        await session.delete(group)
    return web.Response(status=204)


# ---- tokens -------------------------------------------------------------------------------------
def _token_out(row: ApiToken, secret: str | None = None) -> s.TokenOut:
    return s.TokenOut(name=row.name, scopes=row.scopes.split(), created_at=row.created_at,
                      last_used_at=row.last_used_at, revoked=row.revoked, token=secret)


@router.route("GET", "/tokens", summary="List API tokens (never their secrets)", tag="tokens", scope="admin",
              response=s.TokenList)
async def list_tokens(request: web.Request) -> s.TokenList:
    async with ctx_of(request).db.session() as session:
        rows = (await session.scalars(select(ApiToken).order_by(ApiToken.id))).all()
    return s.TokenList(items=[_token_out(r) for r in rows])


@router.route("POST", "/tokens", summary="Create a scoped API token; the secret is returned once",
              tag="tokens", scope="admin", body=s.TokenIn, response=s.TokenOut, status=201, errors=(409,))
async def create_token(request: web.Request, body: s.TokenIn) -> s.TokenOut:
    async with ctx_of(request).db.transaction() as session:
        row, secret = await tokens.create(session, body.name, body.scopes)
        return _token_out(row, secret)


@router.route("DELETE", "/tokens/{name}", summary="Revoke an API token", tag="tokens", scope="admin",
              response=s.TokenOut)
async def revoke_token(request: web.Request, name: str) -> s.TokenOut:
    async with ctx_of(request).db.transaction() as session:
        row = await tokens.revoke(session, name)
    request.app[TOKEN_CACHE].clear()
    return _token_out(row)
