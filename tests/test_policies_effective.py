"""The effective-policy rules (``mdm/policies/effective.py``, ``docs/policies.md``), pure: the worked
examples of the documentation, and property tests of the precedence rules over random chains."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.policies.documents import (
    Conditions,
    DocumentTooLarge,
    InvalidSchedule,
    InvalidSetting,
    InvalidTimezone,
    check_document,
    parse_conditions,
    parse_schedule,
)
from mdm.policies.effective import PolicyNode, ProfileNode, chain, resolve, version_of
from mdm.policies.seams import EffectivePolicy, PolicySetting, apply_local

S = PolicySetting


def policy(pid: int, settings: dict[str, S], *, active: bool = True, inherit: bool = True,
           force: bool = False, profiles: tuple[ProfileNode, ...] = ()) -> PolicyNode:
    return PolicyNode(pid, pid * 10, f"p{pid}", active, inherit, force, settings, profiles)


def profile(pid: int, name: str, settings: dict[str, S], *, priority: int = 0, active: bool = True,
            conditions: Conditions = Conditions()) -> ProfileNode:
    return ProfileNode(pid, name, priority, active, conditions, settings)


def values(levels: list[PolicyNode], tags: frozenset[str] = frozenset(),
           ooo: dict[int, bool] | None = None) -> dict[str, tuple[Any, bool]]:
    result = resolve(levels, tags, ooo or {})
    return {k: (s.value, s.locked) for k, s in result.policy.settings.items()}


# ---- worked examples (docs/policies.md) -------------------------------------------------------------
def test_a_parent_lock_holds_and_an_unlocked_value_is_a_default() -> None:
    corp = policy(1, {"password.min_length": S(8, True), "camera.allowed": S(True, False)})
    sales = policy(2, {"password.min_length": S(4, False), "camera.allowed": S(False, False),
                       "wifi.ssid": S("sales", True)})
    assert values(chain([corp, sales])) == {
        "password.min_length": (8, True),  # locked above: the child's 4 is ignored
        "camera.allowed": (False, False),  # unlocked above: the child overrides
        "wifi.ssid": ("sales", True),  # the child's own, locked for the device
    }


def test_a_child_that_does_not_inherit_starts_a_new_chain_unless_forced() -> None:
    corp = policy(1, {"password.min_length": S(8, True)})
    lab = policy(2, {"camera.allowed": S(True, False)}, inherit=False)
    assert chain([corp, lab]) == [lab]
    assert values(chain([corp, lab])) == {"camera.allowed": (True, False)}
    forcing = policy(1, {"password.min_length": S(8, True)}, force=True)
    assert chain([forcing, lab]) == [forcing, lab]
    assert values(chain([forcing, lab]))["password.min_length"] == (8, True)
    # Forcing reaches every level below, not just the children.
    grandchild = policy(3, {"x": S(1, False)}, inherit=False)
    assert chain([forcing, lab, grandchild]) == [forcing, lab, grandchild]


def test_an_inactive_policy_is_neither_applied_nor_inherited() -> None:
    corp = policy(1, {"a": S(1, True)})
    sales = policy(2, {"a": S(2, True), "b": S(2, False)}, active=False)
    emea = policy(3, {"b": S(3, False)})
    assert chain([corp, sales, emea]) == [corp, emea]
    assert values(chain([corp, sales, emea])) == {"a": (1, True), "b": (3, False)}
    assert chain([None, sales]) == []
    assert resolve([], frozenset(), {}).policy == EffectivePolicy("", {})


def test_profiles_override_the_policy_but_not_a_parent_lock() -> None:
    night = profile(7, "night", {"camera.allowed": S(False, True), "password.min_length": S(12, True)},
                    conditions=Conditions(tags_any=frozenset({"field"})))
    corp = policy(1, {"password.min_length": S(8, True)})
    sales = policy(2, {"camera.allowed": S(True, False)}, profiles=(night,))
    levels = chain([corp, sales])
    assert values(levels) == {"password.min_length": (8, True), "camera.allowed": (True, False)}
    # Active (the device is tagged "field"): it overrides and locks sales' own value, but not corp's lock.
    assert values(levels, frozenset({"field"})) == {
        "password.min_length": (8, True), "camera.allowed": (False, True),
    }
    result = resolve(levels, frozenset({"field"}), {})
    assert result.sources == {"camera.allowed": "profile:7/night", "password.min_length": "policy:1"}
    assert [(c.kind, c.name, c.settings) for c in result.contributors] == [
        ("policy", "p1", 1), ("policy", "p2", 0), ("profile", "night", 1),
    ]


def test_a_profile_may_change_its_own_policys_locked_values() -> None:
    travel = profile(5, "travel", {"vpn.always_on": S(False, False)})
    sales = policy(2, {"vpn.always_on": S(True, True)}, profiles=(travel,))
    assert values([sales]) == {"vpn.always_on": (False, False)}


def test_profile_precedence_upstream_first_then_priority() -> None:
    low = profile(1, "low", {"k": S("low", False)}, priority=1)
    high = profile(2, "high", {"k": S("high", False)}, priority=5)
    parent_profile = profile(3, "parent", {"k": S("parent", False)}, priority=-100)
    child = policy(2, {}, profiles=(low, high))
    assert values([child])["k"] == ("high", False)
    parent = policy(1, {}, profiles=(parent_profile,))
    # The parent policy's profile outranks the child's, whatever their priorities.
    assert values([parent, child])["k"] == ("parent", False)
    inactive = policy(1, {}, profiles=(profile(3, "parent", {"k": S("parent", False)}, active=False),))
    assert values([inactive, child])["k"] == ("high", False)


def test_tag_conditions_any_and_all() -> None:
    c = Conditions(tags_any=frozenset({"a", "b"}), tags_all=frozenset({"x", "y"}))
    assert not c.holds(frozenset({"a", "x"}), False)
    assert c.holds(frozenset({"b", "x", "y"}), False)
    assert not c.holds(frozenset({"x", "y"}), False)
    assert Conditions().holds(frozenset(), False)


def test_out_of_office_schedule_in_its_time_zone() -> None:
    raw = {"timezone": "Europe/Berlin",
           "office_hours": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}]}
    schedule = parse_schedule(raw)
    # 2026-12-07 is a Monday; Berlin is UTC+1 in December.
    assert not schedule.out_of_office(datetime(2026, 12, 7, 8, 0, tzinfo=UTC))  # 09:00 Berlin
    assert schedule.out_of_office(datetime(2026, 12, 7, 7, 59, tzinfo=UTC))  # 08:59 Berlin
    assert schedule.out_of_office(datetime(2026, 12, 7, 16, 0, tzinfo=UTC))  # 17:00 Berlin: closed
    assert schedule.out_of_office(datetime(2026, 12, 12, 12, 0, tzinfo=UTC))  # Saturday
    conditions = parse_conditions({"out_of_office": raw})
    assert conditions.office is not None and not conditions.holds(frozenset(), False)
    assert conditions.holds(frozenset(), True)


@pytest.mark.parametrize(("raw", "error"), [
    ({"timezone": "Mars/Olympus", "office_hours": [{"days": ["mon"], "start": "09:00", "end": "10:00"}]},
     InvalidTimezone),
    ({"timezone": "../../etc/passwd", "office_hours": [{"days": ["mon"], "start": "09:00", "end": "10:00"}]},
     InvalidTimezone),
    ({"timezone": "UTC", "office_hours": [{"days": ["mon"], "start": "18:00", "end": "09:00"}]},
     InvalidSchedule),
    ({"timezone": "UTC", "office_hours": [{"days": ["moon"], "start": "09:00", "end": "10:00"}]},
     InvalidSchedule),
    ({"timezone": "UTC", "office_hours": [{"days": ["mon"], "start": "25:00", "end": "26:00"}]},
     InvalidSchedule),
    ({"timezone": "UTC", "office_hours": []}, InvalidSchedule),
    ({"timezone": "UTC", "office_hours": [{"days": ["mon", "mon"], "start": "09:00", "end": "10:00"}]},
     InvalidSchedule),
])
def test_bad_schedules_are_refused(raw: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_schedule(raw)


def test_setting_documents_are_checked() -> None:
    with pytest.raises(InvalidSetting, match="null"):
        check_document({"a": S(None, False)}, "x")
    with pytest.raises(InvalidSetting, match="key"):
        check_document({"bad key": S(1, False)}, "x")
    deep: Any = 1
    for _ in range(10):
        deep = [deep]
    with pytest.raises(InvalidSetting, match="nested"):
        check_document({"a": S(deep, False)}, "x")
    with pytest.raises(DocumentTooLarge):
        check_document({"a": S("x" * 70_000, False)}, "x")
    with pytest.raises(DocumentTooLarge):
        check_document({f"k{i}": S(i, False) for i in range(501)}, "x")
    assert check_document({"b": S([1, {"c": "d"}], True), "a": S(1.5, False)}, "x") == {
        "a": {"value": 1.5, "locked": False}, "b": {"value": [1, {"c": "d"}], "locked": True},
    }


# ---- properties ---------------------------------------------------------------------------------------
KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUE = st.one_of(st.integers(-3, 3), st.booleans(), st.text(max_size=3),
                  st.lists(st.integers(0, 2), max_size=2))
DOC = st.dictionaries(KEYS, st.builds(PolicySetting, VALUE, st.booleans()), max_size=4)


@st.composite
def chains(draw: st.DrawFn) -> list[PolicyNode | None]:
    n = draw(st.integers(1, 5))
    out: list[PolicyNode | None] = []
    for i in range(n):
        if draw(st.integers(0, 5)) == 0:
            out.append(None)
            continue
        out.append(policy(i + 1, draw(DOC), active=draw(st.integers(0, 4)) > 0, inherit=draw(st.booleans()),
                          force=draw(st.integers(0, 3)) == 0))
    return out


@settings(max_examples=300, deadline=None)
@given(chains())
def test_property_locks_from_above_hold_and_unlocked_values_are_defaults(
    groups: list[PolicyNode | None],
) -> None:
    levels = chain(groups)
    result = values(levels)
    keys = {k for p in levels for k in p.settings}
    assert set(result) == keys
    for key in keys:
        lockers = [p for p in levels if key in p.settings and p.settings[key].locked]
        if lockers:  # the topmost lock wins, whatever any lower policy says
            assert result[key] == (lockers[0].settings[key].value, True)
        else:  # the lowest policy that sets it
            lowest = [p for p in levels if key in p.settings][-1]
            assert result[key] == (lowest.settings[key].value, False)


@settings(max_examples=300, deadline=None)
@given(chains())
def test_property_the_chain(groups: list[PolicyNode | None]) -> None:
    active = [p for p in groups if p is not None and p.active]
    levels = chain(groups)
    assert levels == active[len(active) - len(levels):]  # a suffix of the active policies
    if active:
        assert levels and levels[-1] is active[-1]  # the device's nearest active policy always applies
        if all(p.inherit for p in active) or active[0].force_inheritance:
            assert levels == active
        if not active[-1].inherit and not any(p.force_inheritance for p in active[:-1]):
            assert levels == [active[-1]]
    for n, lower in enumerate(levels[1:], start=1):
        assert lower.inherit or any(p.force_inheritance for p in levels[:n])


@settings(max_examples=300, deadline=None)
@given(chains(), DOC, st.integers(-5, 5), st.booleans())
def test_property_a_profile_never_beats_a_lock_from_above_its_policy(
    groups: list[PolicyNode | None], fragment: dict[str, PolicySetting], priority: int, holds: bool,
) -> None:
    levels = chain(groups)
    if not levels:
        return
    owner = len(levels) - 1 if priority % 2 else 0
    conditions = Conditions(tags_all=frozenset() if holds else frozenset({"never"}))
    target = levels[owner]
    with_profile = [*levels]
    with_profile[owner] = PolicyNode(target.id, target.group_id, target.name, True, target.inherit,
                                     target.force_inheritance, target.settings,
                                     (profile(99, "p", fragment, priority=priority, conditions=conditions),))
    before, after = values(levels), values(with_profile)
    if not holds:
        assert after == before  # a profile whose conditions fail changes nothing
        return
    above = levels[:owner]
    for key, setting in fragment.items():
        lockers = [p for p in above if key in p.settings and p.settings[key].locked]
        if lockers:
            assert after[key] == before[key]
        else:
            assert after[key] == (setting.value, setting.locked)
    for key in set(before) - set(fragment):
        assert after[key] == before[key]


@settings(max_examples=300, deadline=None)
@given(DOC, st.dictionaries(KEYS, VALUE, max_size=4))
def test_property_apply_local(doc: dict[str, PolicySetting], local: dict[str, Any]) -> None:
    """Unlocked policy values < the device's local settings < locked policy values."""
    effective = EffectivePolicy(version_of(doc), doc)
    applied = apply_local(effective, local)
    assert set(applied) == set(doc) | set(local)
    for key, value in applied.items():
        if key in doc and doc[key].locked:
            assert value == doc[key].value
        elif key in local:
            assert value == local[key]
        else:
            assert value == doc[key].value


@settings(max_examples=200, deadline=None)
@given(DOC)
def test_property_the_version_is_a_stable_hash_of_the_content(doc: dict[str, PolicySetting]) -> None:
    shuffled = dict(reversed(list(doc.items())))
    assert version_of(doc) == version_of(shuffled)
    assert (version_of(doc) == "") == (not doc)
    for key, s in doc.items():
        flipped = {**doc, key: PolicySetting(s.value, not s.locked)}
        assert version_of(flipped) != version_of(doc)


def test_the_version_is_the_same_in_every_process() -> None:
    """A fixed document has a fixed version (replicas and restarts agree)."""
    doc = {"password.min_length": S(8, True), "camera.allowed": S(False, False), "apps": S(["a", "b"], False)}
    assert version_of(doc) == "6d3dc886b3c1231a47a996970c44d43b"
    # JSON tells 1 from 1.0, and so does the device: they are different documents.
    assert version_of({"a": S(1, False)}) != version_of({"a": S(1.0, False)})


def test_the_worked_example_of_an_upstream_profile_over_a_locked_downstream_one() -> None:
    """docs/policies.md: Corp's "evenings" profile outranks Sales' "field" profile, even though
    "field" locked the setting (the lock is at a lower level than Corp)."""
    field = profile(1, "field", {"camera.allowed": S(False, True), "password.min_length": S(12, True)},
                    priority=5, conditions=Conditions(tags_any=frozenset({"field", "travel"})))
    weekdays = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}
    office = parse_conditions({"out_of_office": {"timezone": "Europe/Berlin", "office_hours": [weekdays]}})
    evenings = profile(2, "evenings", {"camera.allowed": S(True, False)}, priority=-100, conditions=office)
    corp = policy(1, {"password.min_length": S(8, True), "camera.allowed": S(True, False)},
                  profiles=(evenings,))
    sales = policy(2, {"password.min_length": S(4, False), "camera.allowed": S(False, False)},
                   profiles=(field,))
    levels = chain([corp, sales, None])
    travel = frozenset({"travel"})
    pin = ("password.min_length", (8, True))
    assert values(levels, travel, {2: False}) == dict([pin, ("camera.allowed", (False, True))])
    assert values(levels, travel, {2: True}) == dict([pin, ("camera.allowed", (True, False))])
    assert values(levels, frozenset(), {2: False}) == dict([pin, ("camera.allowed", (False, False))])
    local = {"camera.allowed": True, "ringtone": "bell", "password.min_length": 2}
    assert apply_local(resolve(levels, frozenset(), {2: False}).policy, local) == {
        "password.min_length": 8, "camera.allowed": True, "ringtone": "bell",
    }
