"""Managing policies and their profiles (the admin API and the CLI's back end).

Every change runs in one transaction: the policy row is locked first (concurrent edits of one
policy take turns), the expected revision is checked (optimistic concurrency: a stale one is a
409 ``stale_revision``, nothing written), the change and its audit event are written, the policy's
revision and the global policies revision (``policy_state``) grow. After the commit the resolver
of this replica is told at once (the others see the global revision within a second) and the KES
devices of the policy's group and its subgroups are woken, in pages (``DeviceWaker``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import NotFound
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.policies import event_types as ev
from mdm.policies import store
from mdm.policies.documents import (
    MAX_PROFILES,
    check_document,
    check_key,
    check_profile_name,
    stored_conditions,
)
from mdm.policies.resolver import CachedResolver
from mdm.policies.seams import PolicySetting
from mdm.policies.service_devices import DeviceWaker
from mdm.policies.tables import Policy, PolicyProfile
from mdm.policies.views import (
    ConflictingChange,
    PolicyChange,
    PolicyExists,
    PolicyView,
    ProfileChange,
    ProfileExists,
    ProfileView,
    StaleRevision,
    TooManyProfiles,
    UnknownSetting,
)


def _document(stored: Mapping[str, Any]) -> dict[str, PolicySetting]:
    return {k: PolicySetting(v["value"], bool(v["locked"])) for k, v in stored.items()}


def edit_document(
    current: Mapping[str, PolicySetting], settings: Mapping[str, PolicySetting] | None,
    set_: Mapping[str, PolicySetting], unset: Sequence[str],
    lock: Sequence[str] = (), unlock: Sequence[str] = (),
) -> dict[str, PolicySetting]:
    """The document after a change (checked for contradictions and unknown keys)."""
    if settings is not None and (set_ or unset):
        raise ConflictingChange("give either settings (the whole document) or set/unset, not both")
    both = sorted(set(set_) & set(unset)) or sorted(set(lock) & set(unlock))
    if both:
        raise ConflictingChange(f"setting {both[0]!r} is both set and unset (or locked and unlocked)")
    doc = dict(current if settings is None else settings)
    for key in unset:
        if key not in doc:
            raise UnknownSetting(f"no setting {key!r} to unset", key=key)
        del doc[key]
    for key, setting in set_.items():
        check_key(key)
        doc[key] = setting
    for key, locked in [*((k, True) for k in lock), *((k, False) for k in unlock)]:
        if key not in doc:
            raise UnknownSetting(f"no setting {key!r} to {'lock' if locked else 'unlock'}", key=key)
        doc[key] = PolicySetting(doc[key].value, locked)
    return doc


def _diff(old: Mapping[str, PolicySetting], new: Mapping[str, PolicySetting]) -> dict[str, list[str]]:
    return {
        "set": sorted(k for k, s in new.items() if k not in old or old[k].value != s.value
                      or type(old[k].value) is not type(s.value)),
        "unset": sorted(k for k in old if k not in new),
        "locked": sorted(k for k, s in new.items() if s.locked and (k not in old or not old[k].locked)),
        "unlocked": sorted(k for k, s in new.items() if not s.locked and k in old and old[k].locked),
    }


class PolicyService:
    def __init__(self, db: Database, resolver: CachedResolver, waker: DeviceWaker) -> None:
        self.db = db
        self.resolver = resolver
        self.waker = waker

    # ---- reading --------------------------------------------------------------------------------
    async def list(self, group_id: int | None = None) -> list[PolicyView]:
        async with self.db.session() as session:
            rows = await store.policies(session, group_id)
            profiles = await store.profiles_of(session, [r.id for r in rows])
        return [PolicyView.of(r, [p for p in profiles if p.policy_id == r.id]) for r in rows]

    async def get(self, policy_id: int) -> PolicyView:
        async with self.db.session() as session:
            row = await self._row(session, policy_id, None)
            return PolicyView.of(row, await store.profiles_of(session, [row.id]))

    # ---- policies -------------------------------------------------------------------------------
    async def create(
        self, group_id: int, name: str, settings: Mapping[str, PolicySetting], *, active: bool = True,
        inherit: bool = True, force_inheritance: bool = False, by: str | None = None,
    ) -> PolicyView:
        stored = check_document(settings, "the policy")
        async with self.db.transaction() as session:
            if not await store.group_exists(session, group_id):
                raise NotFound(f"no group {group_id}", group_id=group_id)
            existing = await store.policy_of_group(session, group_id)
            if existing is not None:
                raise PolicyExists(f"group {group_id} already has policy {existing.id} (one per group)",
                                   policy_id=existing.id)
            now = utcnow()
            try:
                row = await store.add_policy(
                    session, group_id=group_id, name=name, settings=stored, active=active, inherit=inherit,
                    force_inheritance=force_inheritance, revision=1, created_at=now, updated_at=now,
                    updated_by=by,
                )
            except IntegrityError:
                raise PolicyExists(f"group {group_id} already has a policy (one per group)") from None
            events.emit(session, ev.POLICY_CREATED, policy_id=row.id, group_id=group_id, name=name,
                        revision=1, by=by, settings=len(stored), active=active)
            await store.bump(session)
            view = PolicyView.of(row, [])
        await self._changed(group_id, wake=active)
        return view

    async def update(
        self, policy_id: int, change: PolicyChange, *, expected: int | None, by: str | None = None
    ) -> PolicyView:
        async with self.db.transaction() as session:
            row = await self._row(session, policy_id, expected, lock=True)
            old = _document(row.settings)
            new = edit_document(old, change.settings, change.set, change.unset, change.lock, change.unlock)
            stored = check_document(new, "the policy")
            diff = _diff(old, new)
            flags: dict[str, bool | str] = {
                k: v for k, v in (("name", change.name), ("inherit", change.inherit),
                                  ("force_inheritance", change.force_inheritance))
                if v is not None and getattr(row, k) != v
            }
            changed = any(diff.values()) or bool(flags)
            if changed:
                row.settings = stored
                for key, value in flags.items():
                    setattr(row, key, value)
                await self._bumped(session, row, by)
                events.emit(session, ev.POLICY_UPDATED, policy_id=row.id, group_id=row.group_id,
                            name=row.name, revision=row.revision, by=by, flags=flags, set=diff["set"],
                            unset=diff["unset"], locked=diff["locked"], unlocked=diff["unlocked"])
            view = PolicyView.of(row, await store.profiles_of(session, [row.id]))
        if changed:
            await self._changed(view.group_id, wake=view.active)
        return view

    async def set_active(
        self, policy_id: int, active: bool, *, expected: int | None, by: str | None
    ) -> PolicyView:
        async with self.db.transaction() as session:
            row = await self._row(session, policy_id, expected, lock=True)
            changed = row.active != active
            if changed:
                row.active = active
                await self._bumped(session, row, by)
                kind = ev.POLICY_ACTIVATED if active else ev.POLICY_DEACTIVATED
                events.emit(session, kind, policy_id=row.id, group_id=row.group_id, name=row.name,
                            revision=row.revision, by=by)
            view = PolicyView.of(row, await store.profiles_of(session, [row.id]))
        if changed:
            await self._changed(view.group_id, wake=True)
        return view

    async def delete(self, policy_id: int, *, expected: int | None, by: str | None) -> None:
        async with self.db.transaction() as session:
            row = await self._row(session, policy_id, expected, lock=True)
            group_id, active = row.group_id, row.active
            events.emit(session, ev.POLICY_DELETED, policy_id=row.id, group_id=group_id, name=row.name,
                        revision=row.revision, by=by)
            await store.delete_policy(session, row)
            await store.bump(session)
        await self._changed(group_id, wake=active)

    # ---- profiles -------------------------------------------------------------------------------
    async def add_profile(
        self, policy_id: int, name: str, change: ProfileChange, *, expected: int | None, by: str | None
    ) -> ProfileView:
        check_profile_name(name)
        settings = check_document(change.settings or {}, f"profile {name!r}")
        conditions = stored_conditions(change.conditions or {})
        async with self.db.transaction() as session:
            row = await self._row(session, policy_id, expected, lock=True)
            if await store.profile(session, policy_id, name) is not None:
                raise ProfileExists(f"policy {policy_id} already has a profile {name!r}")
            if len(await store.profiles_of(session, [policy_id])) >= MAX_PROFILES:
                raise TooManyProfiles(f"policy {policy_id} has {MAX_PROFILES} profiles already (the most)")
            now = utcnow()
            profile = await store.add_profile(
                session, policy_id=policy_id, name=name, priority=change.priority or 0,
                active=True if change.active is None else change.active, conditions=conditions,
                settings=settings, created_at=now, updated_at=now,
            )
            await self._bumped(session, row, by)
            events.emit(session, ev.POLICY_PROFILE_CREATED, policy_id=row.id, group_id=row.group_id,
                        name=row.name, revision=row.revision, by=by, profile=name, priority=profile.priority,
                        active=profile.active, settings=len(settings))
            view, group_id, wake = ProfileView.of(profile), row.group_id, row.active
        await self._changed(group_id, wake=wake)
        return view

    async def update_profile(
        self, policy_id: int, name: str, change: ProfileChange, *, expected: int | None, by: str | None
    ) -> ProfileView:
        async with self.db.transaction() as session:
            row = await self._row(session, policy_id, expected, lock=True)
            profile = await self._profile(session, policy_id, name)
            new = edit_document(_document(profile.settings), change.settings, change.set, change.unset)
            profile.settings = check_document(new, f"profile {name!r}")
            if change.conditions is not None:
                profile.conditions = stored_conditions(change.conditions)
            if change.priority is not None:
                profile.priority = change.priority
            if change.active is not None:
                profile.active = change.active
            profile.updated_at = utcnow()
            await self._bumped(session, row, by)
            events.emit(session, ev.POLICY_PROFILE_UPDATED, policy_id=row.id, group_id=row.group_id,
                        name=row.name, revision=row.revision, by=by, profile=name, priority=profile.priority,
                        active=profile.active, settings=len(new))
            view, group_id, wake = ProfileView.of(profile), row.group_id, row.active
        await self._changed(group_id, wake=wake)
        return view

    async def delete_profile(
        self, policy_id: int, name: str, *, expected: int | None, by: str | None
    ) -> None:
        async with self.db.transaction() as session:
            row = await self._row(session, policy_id, expected, lock=True)
            profile = await self._profile(session, policy_id, name)
            await store.delete_profile(session, profile)
            await self._bumped(session, row, by)
            events.emit(session, ev.POLICY_PROFILE_DELETED, policy_id=row.id, group_id=row.group_id,
                        name=row.name, revision=row.revision, by=by, profile=name)
            group_id, wake = row.group_id, row.active
        await self._changed(group_id, wake=wake)

    # ---- helpers --------------------------------------------------------------------------------
    async def _row(
        self, session: AsyncSession, policy_id: int, expected: int | None, *, lock: bool = False
    ) -> Policy:
        row = await store.policy(session, policy_id, lock=lock)
        if row is None:
            raise NotFound(f"no policy {policy_id}", policy_id=policy_id)
        if expected is not None and expected != row.revision:
            raise StaleRevision(
                f"policy {policy_id} is at revision {row.revision}, not {expected}: re-read it and retry",
                revision=row.revision,
            )
        return row

    async def _profile(self, session: AsyncSession, policy_id: int, name: str) -> PolicyProfile:
        profile = await store.profile(session, policy_id, name)
        if profile is None:
            raise NotFound(f"policy {policy_id} has no profile {name!r}")
        return profile

    async def _bumped(self, session: AsyncSession, row: Policy, by: str | None) -> None:
        row.revision += 1
        row.updated_at = utcnow()
        row.updated_by = by
        await session.flush()
        await store.bump(session)

    async def _changed(self, group_id: int, *, wake: bool) -> None:
        self.resolver.invalidate()
        # This replica's snapshot holds the change before any device is woken: a refresh already
        # under way (the worker's) may have read the revision before the commit, and a woken long
        # poll would answer from it without the new policy.
        async with self.db.session() as session:
            await self.resolver.refresh(session)
        if wake:
            self.waker.wake_subtree(group_id)

