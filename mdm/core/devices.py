"""Device queries and administration shared by the API and protocol handlers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core import store_commands as command_store
from mdm.core import store_devices as store
from mdm.core.errors import NotFound
from mdm.core.event_types import DEVICE_DELETED
from mdm.db.models import Device, Protocol


async def get(session: AsyncSession, device_id: int) -> Device:
    device = await store.device(session, device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    return device


async def owner_name(session: AsyncSession, device: Device) -> str | None:
    if device.user_id is None:
        return None
    return await store.user_name(session, device.user_id)


async def group_and_descendants(session: AsyncSession, group_id: int) -> list[int]:
    """The group and every group nested below it (groups are few; walk them in memory)."""
    rows = await store.group_links(session)
    if group_id not in {r.id for r in rows}:
        raise NotFound(f"no group {group_id}")
    children: dict[int | None, list[int]] = {}
    for r in rows:
        children.setdefault(r.parent_id, []).append(r.id)
    out, stack = [], [group_id]
    while stack:
        gid = stack.pop()
        out.append(gid)
        stack.extend(children.get(gid, []))
    return out


async def list_devices(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int | None = None,
    protocol: str | None = None,
    status: str | None = None,
    user: str | None = None,
    group: int | None = None,
    q: str | None = None,
) -> tuple[list[tuple[Device, str | None]], int | None]:
    """A page ordered by id, and the cursor of the next page (None when this is the last)."""
    rows = await store.device_page(
        session,
        limit=limit + 1,
        after_id=after_id,
        **await _filters(session, protocol=protocol, status=status, user=user, group=group, q=q),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1][0].id if more and rows else None)


async def count_devices(
    session: AsyncSession,
    *,
    protocol: str | None = None,
    status: str | None = None,
    user: str | None = None,
    group: int | None = None,
    q: str | None = None,
    search_cap: int | None = None,
) -> int:
    """How many devices ``list_devices`` with these filters pages through (all pages). Costs a
    pass over the matching index entries (for ``q``: every match in the search index; a ``q`` of
    1-2 characters scans the table): ask only when shown. With ``q`` and ``search_cap``, counting
    stops at ``search_cap + 1`` (more than ``search_cap``)."""
    return await store.count_devices(
        session, **await _filters(session, protocol=protocol, status=status, user=user, group=group, q=q),
        cap=search_cap if q else None,
    )


async def _filters(
    session: AsyncSession,
    *,
    protocol: str | None,
    status: str | None,
    user: str | None,
    group: int | None,
    q: str | None,
) -> dict[str, Any]:
    return {
        "protocol": None if protocol is None else Protocol[protocol.upper()].value,
        "status": status,
        "user": user,
        "group_ids": None if group is None else await group_and_descendants(session, group),
        "q": q,
    }


async def active_command_count(session: AsyncSession, device_id: int) -> int:
    return await command_store.active_count(session, device_id)


async def set_group(session: AsyncSession, device_id: int, group_id: int | None) -> Device:
    """Put a device in a group (``None``: in none)."""
    device = await get(session, device_id)
    if group_id is not None and await store.group(session, group_id) is None:
        raise NotFound(f"no group {group_id}")
    device.group_id = group_id
    return device


async def delete(session: AsyncSession, device_id: int, *, by: str | None = None) -> Device:
    """Forget a device (its commands go with it); the event keeps the facts. Its certificate stops
    identifying it at commit, on every replica (the iOS binding cache watches device deletes:
    ``mdm/ios/state.py``), and its id is never handed out again (``NEVER_REUSED``)."""
    device = await get(session, device_id)
    events.emit(
        session,
        DEVICE_DELETED,
        device_id=device.id,
        identifier=device.identifier,
        protocol=Protocol(device.protocol).name.lower(),
        by=by,
    )
    await store.delete_device(session, device)
    return device
