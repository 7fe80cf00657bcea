"""Policies and single devices: device tags, desired vs applied, and waking the KES devices a
policy change concerns.

Wake-ups run after the change's commit, in a task of their own (the API answers at once): the
devices of the policy's group and its subgroups are read a page at a time (``WAKE_BATCH`` ids,
one short read each, never the whole fleet in memory) and each page handed to the KES pusher. A
wake-up is a hint: a device not woken (no push token, a restart meanwhile) gets the new policy at
its next sync anyway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mdm.core import events
from mdm.core.errors import NotFound
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.enums import Protocol
from mdm.policies import event_types as ev
from mdm.policies import store
from mdm.policies.documents import check_tags
from mdm.policies.resolver import CachedResolver
from mdm.policies.seams import EffectivePolicy, apply_local
from mdm.policies.views import DeviceView

log = logging.getLogger("mdm.policies")
WAKE_BATCH = 500
WAKE_REASON = "policy"
# Where the KES sync keeps the local settings a device reports (``devices.attributes``).
LOCAL_SETTINGS_ATTRIBUTE = "kes_local_settings"


def subtree(links: list[tuple[int, int | None]], group_id: int) -> list[int]:
    """``group_id`` and every group below it."""
    children: dict[int | None, list[int]] = {}
    for gid, parent in links:
        children.setdefault(parent, []).append(gid)
    found, todo, seen = [], [group_id], set()
    while todo:
        gid = todo.pop()
        if gid in seen:
            continue
        seen.add(gid)
        found.append(gid)
        todo.extend(children.get(gid, ()))
    return sorted(found)


class DeviceWaker:
    """Wakes the KES devices of a group's subtree after a policy change, page by page."""

    def __init__(self, db: Database, pushers: Pushers, *, batch: int = WAKE_BATCH) -> None:
        self.db = db
        self.pushers = pushers
        self.batch = batch
        self._tasks: set[asyncio.Task[int]] = set()
        self.woken = 0  # devices handed to the pusher (tests and logs)

    def wake_subtree(self, group_id: int) -> None:
        if self.pushers.get(Protocol.KES) is None:
            return  # nothing to wake with: the devices get the policy at their next sync
        task = asyncio.create_task(self.run(group_id), name=f"policies.wake.{group_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, group_id: int) -> int:
        try:
            async with self.db.session() as session:
                groups = subtree(await store.group_links(session), group_id)
            after, count = 0, 0
            while True:
                async with self.db.session() as session:
                    ids = await store.kes_devices_page(session, groups, after, self.batch)
                if not ids:
                    break
                await self.pushers.wake(Protocol.KES, ids, WAKE_REASON)
                count += len(ids)
                self.woken += len(ids)
                after = ids[-1]
                if len(ids) < self.batch:
                    break
            if count:
                log.info("policy change: %d KES device(s) of group %d and its subgroups woken",
                         count, group_id)
            return count
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("waking the devices of group %d after a policy change failed; "
                          "they get the policy at their next sync", group_id)
            return 0

    async def idle(self) -> None:
        """Wait for the wake-ups under way (tests; shutdown cancels them instead)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class DeviceService:
    def __init__(self, db: Database, resolver: CachedResolver, pushers: Pushers) -> None:
        self.db = db
        self.resolver = resolver
        self.pushers = pushers

    async def tags(self, device_id: int) -> list[str]:
        async with self.db.session() as session:
            if await store.device(session, device_id) is None:
                raise NotFound(f"no device {device_id}", device_id=device_id)
            return await store.device_tags(session, device_id)

    async def set_tags(self, device_id: int, tags: list[str], *, by: str | None) -> list[str]:
        wanted = check_tags(tags)
        async with self.db.transaction() as session:
            device = await store.device(session, device_id)
            if device is None:
                raise NotFound(f"no device {device_id}", device_id=device_id)
            current = await store.device_tags(session, device_id)
            if current == wanted:
                return wanted
            revision = await store.bump(session, tags=True)
            await store.set_device_tags(session, device_id, wanted, revision)
            events.emit(session, ev.DEVICE_TAGS_CHANGED, device_id=device_id, by=by,
                        added=sorted(set(wanted) - set(current)), removed=sorted(set(current) - set(wanted)))
            protocol = device.protocol
        self.resolver.forget_device_tags(device_id)
        self.resolver.invalidate()
        if protocol == Protocol.KES:
            await self.pushers.wake(Protocol.KES, [device_id], WAKE_REASON)
        return wanted

    async def view(self, device_id: int) -> DeviceView:
        """Desired (computed now, from fresh data) vs applied, for one device."""
        async with self.db.session() as session:
            device = await store.device(session, device_id)
            if device is None:
                raise NotFound(f"no device {device_id}", device_id=device_id)
            await self.resolver.refresh(session)
            resolution = await self.resolver.resolve(session, device_id, device.group_id)
            applied_version, applied_at = await store.applied(session, device_id)
            tags = await store.device_tags(session, device_id)
            attributes: dict[str, Any] = device.attributes or {}
            group_id = device.group_id
        local = attributes.get(LOCAL_SETTINGS_ATTRIBUTE)
        policy: EffectivePolicy = resolution.policy
        return DeviceView(
            device_id=device_id, group_id=group_id, desired_version=policy.version,
            applied_version=applied_version, applied_at=applied_at, settings=dict(policy.settings),
            sources=dict(resolution.sources), contributors=resolution.contributors, tags=tags,
            local_settings=dict(local) if isinstance(local, dict) else None,
            applied_settings=apply_local(policy, local) if isinstance(local, dict) else None,
        )
