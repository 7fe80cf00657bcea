"""The cached ``PolicyResolver`` the KES sync calls on every sync (``seams.POLICIES``).

Every policy and profile is held in memory (a snapshot, reloaded whole when the policies revision
changes: policies are per group, and groups are few). Per group the chain of policies that apply
is planned once (``Plan``); per (group, the device's tags that the chain's profiles name, the
out-of-office state of the chain's scheduled profiles) the result is computed once. A device's
tags are read once and kept until a tag change is seen; they are read at all only where a profile
of the chain names tags.

Freshness: ``refresh`` reads the one-row ``policy_state`` (and, when policies exist, the group
tree, for moves); the plugin's worker calls it every ``REFRESH_SECONDS`` and ``effective`` itself
when the last one is older than ``max_age``, so an edit on any replica is seen within a second,
and a sync reads nothing when nothing changed. A change made through this replica's service is
seen at once (``invalidate``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.errors import InvalidArgument, ServiceError
from mdm.policies import store
from mdm.policies.documents import parse_conditions, parse_document
from mdm.policies.effective import PolicyNode, ProfileNode, Resolution, chain, resolve
from mdm.policies.seams import EffectivePolicy

log = logging.getLogger("mdm.policies")
REFRESH_SECONDS = 0.5
MAX_AGE_SECONDS = 1.0
MAX_TAG_ENTRIES = 500_000
MAX_RESULTS = 50_000
MAX_APPLIED = 500_000
# A cached applied version is trusted this long; then the next report writes it again if the
# stored one differs (another replica, or a caller's rolled-back transaction).
APPLIED_RECHECK_SECONDS = 600.0
MAX_DEPTH = 64
NONE = Resolution(EffectivePolicy("", {}))
_NO_TAGS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Plan:
    levels: tuple[PolicyNode, ...]
    tags: frozenset[str]  # the tags the chain's active profiles name
    scheduled: tuple[ProfileNode, ...]  # the chain's active profiles with an out-of-office schedule


@dataclass(slots=True)
class Snapshot:
    revision: int
    by_group: dict[int, PolicyNode]
    parents: dict[int, int | None] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


async def load_snapshot(session: AsyncSession) -> Snapshot:
    """Every policy with its profiles, and the group tree (revision read first: a change that
    commits meanwhile is seen again by the next refresh)."""
    revision, _ = await store.state(session)
    policies = await store.all_policies(session)
    profiles: dict[int, list[ProfileNode]] = {}
    for p in await store.all_profiles(session):
        try:
            conditions = parse_conditions(p.conditions)
        except ServiceError as exc:  # e.g. a time zone the system's tz database no longer has
            log.warning("policy profile %d (%s) is not applied: %s", p.id, p.name, exc.message)
            continue
        profiles.setdefault(p.policy_id, []).append(ProfileNode(
            p.id, p.name, p.priority, p.active, conditions, parse_document(p.settings)
        ))
    by_group = {
        p.group_id: PolicyNode(p.id, p.group_id, p.name, p.active, p.inherit, p.force_inheritance,
                               parse_document(p.settings), tuple(profiles.get(p.id, ())))
        for p in policies
    }
    parents = dict(await store.group_links(session)) if by_group else {}
    return Snapshot(revision, by_group, parents)


class CachedResolver:
    """``seams.PolicyResolver`` with the caches described above."""

    def __init__(self, *, clock: Callable[[], datetime] = _now, max_age: float = MAX_AGE_SECONDS) -> None:
        self._clock = clock
        self.max_age = max_age
        self._snap: Snapshot | None = None
        self._checked = -math.inf
        self._lock = asyncio.Lock()  # one refresh at a time: an older read never overwrites a newer
        self._dirty = 0  # invalidations; a refresh that overlapped one does not count as a check
        self._generation = 0  # bumped when plans and results are dropped
        self._plans: dict[int, Plan] = {}
        self._results: dict[tuple[int, frozenset[str], tuple[bool, ...]], Resolution] = {}
        self._tags_revision: int | None = None
        self._tags_generation = 0
        self._tags: dict[int, frozenset[str]] = {}
        self._applied: dict[int, tuple[str, float]] = {}
        self.loads = 0  # snapshot loads (tests and metrics)
        self.tag_reads = 0

    # ---- freshness ------------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Check the revision at the next call (a change committed through this replica)."""
        self._dirty += 1
        self._checked = -math.inf

    async def refresh(self, session: AsyncSession) -> None:
        """Read the revision counters and reload what moved (waits for a refresh under way)."""
        async with self._lock:
            dirty = self._dirty
            await self._refresh(session)
            if dirty == self._dirty:
                self._checked = time.monotonic()

    async def _refresh(self, session: AsyncSession) -> None:
        revision, tags_revision = await store.state(session)
        if self._snap is None or revision != self._snap.revision:
            self._install(await load_snapshot(session))
        elif self._snap.by_group:
            parents = dict(await store.group_links(session))
            if parents != self._snap.parents:
                self._snap.parents = parents
                self._drop_plans()
        if tags_revision != self._tags_revision:
            if self._tags_revision is None or tags_revision < self._tags_revision:
                self._tags.clear()
            else:
                for device_id in await store.tags_changed_since(session, self._tags_revision):
                    self._tags.pop(device_id, None)
            self._tags_revision = tags_revision
            self._tags_generation += 1

    def _install(self, snap: Snapshot) -> None:
        self._snap = snap
        self.loads += 1
        self._drop_plans()

    def _drop_plans(self) -> None:
        self._generation += 1
        self._plans = {}
        self._results = {}

    async def _fresh(self, session: AsyncSession) -> Snapshot:
        stale = time.monotonic() - self._checked > self.max_age
        if self._snap is None or (stale and not self._lock.locked()):
            await self.refresh(session)
        assert self._snap is not None
        return self._snap

    # ---- the effective policy -------------------------------------------------------------------
    def _plan(self, snap: Snapshot, group_id: int) -> Plan:
        plan = self._plans.get(group_id)
        if plan is not None:
            return plan
        trail: list[int] = []
        current: int | None = group_id
        while current is not None and len(trail) < MAX_DEPTH and current not in trail:
            trail.append(current)
            current = snap.parents.get(current)
        levels = tuple(chain([snap.by_group.get(g) for g in reversed(trail)]))
        profiles = [prof for p in levels for prof in p.profiles if prof.active]
        plan = Plan(
            levels,
            frozenset(t for prof in profiles for t in prof.conditions.tags),
            tuple(prof for prof in profiles if prof.conditions.office is not None),
        )
        self._plans[group_id] = plan
        return plan

    async def _device_tags(self, session: AsyncSession, device_id: int) -> frozenset[str]:
        tags = self._tags.get(device_id)
        if tags is None:
            generation = self._tags_generation
            self.tag_reads += 1
            found = await store.device_tags(session, device_id)
            tags = frozenset(found) if found else _NO_TAGS
            if generation == self._tags_generation:  # no refresh dropped tags meanwhile
                if len(self._tags) >= MAX_TAG_ENTRIES:
                    self._tags.clear()
                self._tags[device_id] = tags
        return tags

    async def resolve(self, session: AsyncSession, device_id: int, group_id: int | None) -> Resolution:
        """The effective policy with where each setting came from and who contributed."""
        snap = await self._fresh(session)
        if group_id is None or not snap.by_group:
            return NONE
        generation = self._generation
        plan = self._plan(snap, group_id)
        if not plan.levels:
            return NONE
        tags = _NO_TAGS
        if plan.tags:
            tags = (await self._device_tags(session, device_id)) & plan.tags
        outside: tuple[bool, ...] = ()
        if plan.scheduled:
            now = self._clock()
            outside = tuple(
                p.conditions.office.out_of_office(now) for p in plan.scheduled if p.conditions.office
            )
        key = (group_id, tags, outside)
        found = self._results.get(key)
        if found is None:
            by_profile = {p.id: o for p, o in zip(plan.scheduled, outside, strict=True)}
            found = resolve(plan.levels, tags, by_profile)
            if generation == self._generation:
                if len(self._results) >= MAX_RESULTS:
                    self._results = {}
                self._results[key] = found
        return found

    async def effective(self, session: AsyncSession, device_id: int, group_id: int | None) -> EffectivePolicy:
        return (await self.resolve(session, device_id, group_id)).policy

    # ---- applied versions -----------------------------------------------------------------------
    async def record_applied(self, session: AsyncSession, device_id: int, version: str) -> None:
        if not isinstance(version, str) or len(version) > 64:
            raise InvalidArgument("an applied policy version is a string of at most 64 characters")
        now = time.monotonic()
        cached = self._applied.get(device_id)
        if cached is not None and cached[0] == version and now - cached[1] < APPLIED_RECHECK_SECONDS:
            return
        await store.record_applied(session, device_id, version, self._clock())
        if len(self._applied) >= MAX_APPLIED:
            self._applied.clear()
        self._applied[device_id] = (version, now)

    def forget_device_tags(self, device_id: int) -> None:
        self._tags.pop(device_id, None)
