"""The event types of policies: every change of a policy, of its profiles and of device tags is
audited in the transaction that makes it. Each is declared once; ``events.emit`` takes these."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class _Policy(EventBody):
    policy_id: int
    group_id: int
    name: str
    revision: int
    by: str | None = None


class PolicyCreated(_Policy):
    settings: int
    active: bool


class PolicyUpdated(_Policy):
    # What changed: setting keys set / unset / locked / unlocked, flags changed (name: new value).
    set: list[str] = []
    unset: list[str] = []
    locked: list[str] = []
    unlocked: list[str] = []
    flags: dict[str, bool | str] = {}


class PolicyState(_Policy):
    pass


class _Profile(_Policy):
    profile: str


class ProfileChanged(_Profile):
    priority: int | None = None
    active: bool | None = None
    settings: int | None = None


class PolicyApplied(EventBody):
    # The policy version the agent reports it applied (the one a sync answer carried)
    version: str
    # The version it reported before, if any
    previous: str | None = None


class DeviceTagsChanged(EventBody):
    added: list[str]
    removed: list[str]
    by: str | None = None


POLICY_CREATED = EventType(
    "policy_created", Severity.INFO, PolicyCreated, "A policy was created for an administration group",
    example={
        "policy_id": 3,
        "group_id": 7,
        "name": "Sales phones",
        "revision": 1,
        "by": "ops",
        "settings": 4,
        "active": True,
    },
)
POLICY_UPDATED = EventType(
    "policy_updated", Severity.INFO, PolicyUpdated,
    "A policy's settings, locks, name or inheritance flags changed",
    example={
        "policy_id": 3,
        "group_id": 7,
        "name": "Sales phones",
        "revision": 2,
        "by": "ops",
        "set": ["camera.disabled"],
        "locked": ["camera.disabled"],
    },
)
POLICY_ACTIVATED = EventType(
    "policy_activated", Severity.INFO, PolicyState, "A policy became active (applied and inherited)",
    example={"policy_id": 3, "group_id": 7, "name": "Sales phones", "revision": 3, "by": "ops"},
)
POLICY_DEACTIVATED = EventType(
    "policy_deactivated", Severity.INFO, PolicyState,
    "A policy became inactive (neither applied nor inherited)",
    example={"policy_id": 3, "group_id": 7, "name": "Sales phones", "revision": 4, "by": "ops"},
)
POLICY_DELETED = EventType(
    "policy_deleted", Severity.INFO, PolicyState, "A policy and its profiles were deleted",
    example={"policy_id": 3, "group_id": 7, "name": "Sales phones", "revision": 5, "by": "ops"},
)
POLICY_PROFILE_CREATED = EventType(
    "policy_profile_created", Severity.INFO, ProfileChanged, "A profile was added to a policy",
    example={
        "policy_id": 3,
        "group_id": 7,
        "name": "Sales phones",
        "revision": 6,
        "by": "ops",
        "profile": "Travel",
        "priority": 1,
        "active": True,
        "settings": 2,
    },
)
POLICY_PROFILE_UPDATED = EventType(
    "policy_profile_updated", Severity.INFO, ProfileChanged,
    "A policy profile's settings, conditions, priority or state changed",
    example={
        "policy_id": 3,
        "group_id": 7,
        "name": "Sales phones",
        "revision": 7,
        "by": "ops",
        "profile": "Travel",
        "priority": 2,
    },
)
POLICY_PROFILE_DELETED = EventType(
    "policy_profile_deleted", Severity.INFO, ProfileChanged, "A profile was removed from a policy",
    example={
        "policy_id": 3,
        "group_id": 7,
        "name": "Sales phones",
        "revision": 8,
        "by": "ops",
        "profile": "Travel",
    },
)
POLICY_APPLIED = EventType(
    "policy_applied", Severity.INFO, PolicyApplied,
    "A KES device reported that it applied a policy version (written when the version it reports "
    "changes, not at every sync)",
    example={"version": "3.7.1a2b3c4d", "previous": "3.6.9f8e7d6c"},
)
DEVICE_TAGS_CHANGED = EventType(
    "device_tags_changed", Severity.INFO, DeviceTagsChanged,
    "A device's tags changed (profiles' activation conditions match them)",
    example={"added": ["travel"], "removed": [], "by": "ops"},
)
