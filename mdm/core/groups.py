"""Administration groups: nesting and moving them (the tree must stay a tree)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core import store_devices as store
from mdm.core.errors import Conflict, NotFound
from mdm.core.event_types import GROUP_MOVED
from mdm.db.models import Group


async def all_groups(session: AsyncSession) -> list[Group]:
    return await store.groups(session)


async def create(session: AsyncSession, name: str, parent_id: int | None) -> Group:
    """A new group, at the top level or under ``parent_id``; names are unique among siblings."""
    if parent_id is not None and await store.group(session, parent_id) is None:
        raise NotFound(f"no parent group {parent_id}")
    if await store.group_named(session, name, parent_id) is not None:
        raise Conflict(f"group {name!r} already exists there")
    return await store.add_group(session, name, parent_id)


async def delete(session: AsyncSession, group_id: int) -> None:
    """Delete an empty group (no subgroups, no devices)."""
    group = await store.group(session, group_id)
    if group is None:
        raise NotFound(f"no group {group_id}")
    if await store.has_subgroup(session, group_id):
        raise Conflict(f"group {group_id} has subgroups; delete or move them first")
    if await store.has_device(session, group_id):
        raise Conflict(f"group {group_id} still holds devices; move them first")
    await store.delete_group(session, group)


async def move(
    session: AsyncSession, group_id: int, parent_id: int | None, *, by: str | None = None
) -> Group:
    """Re-parent a group (``None``: top level). A group cannot move under itself or one of its
    descendants (409), nor next to a sibling of the same name (409); nothing changes then."""
    # Every group row locked (groups are few): two concurrent moves that would together close a
    # cycle (A under B, B under A) run one after the other, the second seeing the first.
    # SQLite has one writer anyway (FOR UPDATE is not rendered there).
    rows = await store.lock_group_tree(session)
    by_id = {r.id: r for r in rows}
    if group_id not in by_id:
        raise NotFound(f"no group {group_id}")
    if parent_id is not None and parent_id not in by_id:
        raise NotFound(f"no parent group {parent_id}")
    old_parent = by_id[group_id].parent_id
    # Walk up from the new parent: meeting the group itself means the move would close a cycle.
    ancestor = parent_id
    while ancestor is not None:
        if ancestor == group_id:
            where = "itself" if parent_id == group_id else f"its descendant {parent_id}"
            raise Conflict(f"group {group_id} cannot move under {where}", group=group_id, parent=parent_id)
        ancestor = by_id[ancestor].parent_id
    name = by_id[group_id].name
    if any(r.parent_id == parent_id and r.name == name and r.id != group_id for r in rows):
        place = "at the top level" if parent_id is None else f"in group {parent_id}"
        raise Conflict(f"a group named {name!r} already exists {place}", group=group_id, parent=parent_id)
    group = await store.group(session, group_id)
    assert group is not None
    if old_parent != parent_id:
        group.parent_id = parent_id
        events.emit(session, GROUP_MOVED, group=group_id, name=name, from_parent=old_parent,
                    to_parent=parent_id, by=by)
        await session.flush()
    return group
