"""The effective policy of a device, computed from its group chain (pure; ``docs/policies.md``).

1. **The chain.** From the topmost group down to the device's group, each group's *active* policy
   (a group without one, or with an inactive one, passes its parent's chain on unchanged). A
   policy joins the chain above it when it inherits (``inherit``) or when a policy of that chain
   forces inheritance (``force_inheritance``); otherwise it starts a new chain.
2. **Policies, top down.** A setting locked by a policy of the chain holds below: lower policies
   cannot change its value or its lock. An unlocked value is a default: a lower policy may
   override it and may lock it.
3. **Profiles.** The active profiles (of the chain's policies) whose conditions hold are applied
   over that result in ascending precedence: profiles of a lower policy first, a higher (upstream)
   policy's last; within one policy by ``priority`` (higher wins), then by name. A profile sets
   value and lock of its settings, except a setting locked by a policy *above* its own policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mdm.policies.documents import Conditions
from mdm.policies.seams import EffectivePolicy, PolicySetting

EMPTY = EffectivePolicy("", {})


@dataclass(frozen=True, slots=True)
class ProfileNode:
    id: int
    name: str
    priority: int
    active: bool
    conditions: Conditions
    settings: Mapping[str, PolicySetting]


@dataclass(frozen=True, slots=True)
class PolicyNode:
    id: int
    group_id: int
    name: str
    active: bool
    inherit: bool
    force_inheritance: bool
    settings: Mapping[str, PolicySetting]
    profiles: tuple[ProfileNode, ...] = ()


@dataclass(frozen=True, slots=True)
class Contributor:
    kind: str  # "policy" | "profile"
    policy_id: int
    group_id: int
    name: str  # the policy's name, or the profile's
    settings: int  # how many of the effective settings it set


@dataclass(frozen=True, slots=True)
class Resolution:
    policy: EffectivePolicy
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> "policy:ID" | "profile:ID/NAME"
    contributors: tuple[Contributor, ...] = ()


def version_of(settings: Mapping[str, PolicySetting]) -> str:
    """A stable hash of the sorted content: equal content gives the equal version on every
    replica and every run; no settings give ""."""
    if not settings:
        return ""
    canonical = json.dumps(
        [[k, s.value, s.locked] for k, s in sorted(settings.items())],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def chain(policies: Sequence[PolicyNode | None]) -> list[PolicyNode]:
    """The policies that apply, top down, given each group's policy from the top group down to
    the device's (None: the group has none)."""
    current: list[PolicyNode] = []
    forced = False
    for policy in policies:
        if policy is None or not policy.active:
            continue
        if current and (policy.inherit or forced):
            current.append(policy)
        else:
            current, forced = [policy], False
        forced = forced or policy.force_inheritance
    return current


@dataclass(slots=True)
class _Entry:
    value: object
    locked: bool
    lock_level: int  # chain level of the policy whose (or whose profile's) lock this is
    source: str
    owner: tuple[str, int, int, str]  # contributor identity


def resolve(
    levels: Sequence[PolicyNode], tags: frozenset[str], out_of_office: Mapping[int, bool]
) -> Resolution:
    """The effective policy of ``levels`` (``chain``'s result) for a device with ``tags``;
    ``out_of_office`` by profile id (profiles without a schedule need no entry)."""
    acc: dict[str, _Entry] = {}
    for level, policy in enumerate(levels):
        owner = ("policy", policy.id, policy.group_id, policy.name)
        for key, s in policy.settings.items():
            current = acc.get(key)
            if current is not None and current.locked:
                continue
            acc[key] = _Entry(s.value, s.locked, level, f"policy:{policy.id}", owner)
    applicable = [
        (level, policy, profile)
        for level, policy in enumerate(levels)
        for profile in policy.profiles
        if profile.active and profile.conditions.holds(tags, out_of_office.get(profile.id, False))
    ]
    applicable.sort(key=lambda t: (-t[0], t[2].priority, t[2].name))
    for level, policy, profile in applicable:
        owner = ("profile", policy.id, policy.group_id, profile.name)
        for key, s in profile.settings.items():
            current = acc.get(key)
            if current is not None and current.locked and current.lock_level < level:
                continue
            acc[key] = _Entry(s.value, s.locked, level, f"profile:{profile.id}/{profile.name}", owner)
    settings = {k: PolicySetting(e.value, e.locked) for k, e in sorted(acc.items())}
    counts: dict[tuple[str, int, int, str], int] = {}
    for entry in acc.values():
        counts[entry.owner] = counts.get(entry.owner, 0) + 1
    order = [("policy", p.id, p.group_id, p.name) for p in levels] + [
        ("profile", p.id, p.group_id, prof.name) for _, p, prof in reversed(applicable)
    ]
    contributors = tuple(Contributor(o[0], o[1], o[2], o[3], counts.get(o, 0)) for o in order)
    return Resolution(
        EffectivePolicy(version_of(settings), settings),
        {k: e.source for k, e in sorted(acc.items())},
        contributors,
    )
