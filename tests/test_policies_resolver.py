"""The cached resolver the KES sync calls on every sync: no statement per sync when nothing changed,
a change on another replica seen after its refresh (at most ``max_age`` later), tags read once,
group moves and out-of-office transitions followed, applied versions written only on change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import event, select, update

from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import Device, Group, Protocol
from mdm.policies.resolver import CachedResolver
from mdm.policies.seams import PolicySetting
from mdm.policies.service import PolicyService
from mdm.policies.service_devices import DeviceService, DeviceWaker
from mdm.policies.tables import PolicyDevice
from mdm.policies.views import PolicyChange, ProfileChange

S = PolicySetting


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def setup(db: Database) -> dict[str, int]:
    async with db.transaction() as session:
        corp = Group(name="Corp")
        session.add(corp)
        await session.flush()
        sales = Group(name="Sales", parent_id=corp.id)
        other = Group(name="Other")
        session.add_all([sales, other])
        await session.flush()
        devices = [Device(protocol=Protocol.KES.value, identifier=f"d{i}", group_id=sales.id, attributes={},
                          inventory={}) for i in range(3)]
        session.add_all(devices)
        await session.flush()
        return {"corp": corp.id, "sales": sales.id, "other": other.id,
                **{f"d{i}": d.id for i, d in enumerate(devices)}}


def services(db: Database, resolver: CachedResolver) -> tuple[PolicyService, DeviceService]:
    pushers = Pushers()
    return PolicyService(db, resolver, DeviceWaker(db, pushers)), DeviceService(db, resolver, pushers)


async def test_no_statement_per_sync_when_nothing_changed_and_another_replica_is_seen(db: Database) -> None:
    ids = await setup(db)
    mine, theirs = CachedResolver(), CachedResolver(max_age=3600)
    admin, _ = services(db, mine)
    policy = await admin.create(ids["corp"], "corp", {"a": S(1, True)})
    async with db.session() as session:
        first = await theirs.effective(session, ids["d0"], ids["sales"])
        assert first.settings == {"a": S(1, True)}
        with statements(db) as seen:
            for _ in range(1000):
                again = await theirs.effective(session, ids["d0"], ids["sales"])
        assert seen == [] and again is first  # the cached object: no statement, no recomputation
    await admin.update(policy.id, PolicyChange(set={"a": S(2, True)}), expected=None)
    async with db.session() as session:
        # The other replica still serves its cache until its refresh reads the revision ...
        assert (await theirs.effective(session, ids["d0"], ids["sales"])).settings["a"].value == 1
        await theirs.refresh(session)
        assert (await theirs.effective(session, ids["d0"], ids["sales"])).settings["a"].value == 2
        # ... which, without the worker, a sync does itself once max_age has passed.
        bounded = CachedResolver(max_age=0.2)
        assert (await bounded.effective(session, ids["d0"], ids["sales"])).settings["a"].value == 2
    await admin.update(policy.id, PolicyChange(set={"a": S(3, True)}), expected=None)
    time.sleep(0.25)
    async with db.session() as session:
        assert (await bounded.effective(session, ids["d0"], ids["sales"])).settings["a"].value == 3
        # This replica's own change is seen at once.
        assert (await mine.effective(session, ids["d0"], ids["sales"])).settings["a"].value == 3
        assert (await mine.effective(session, ids["d0"], None)).version == ""
        assert (await mine.effective(session, ids["d0"], ids["other"])).version == ""


async def test_tags_are_read_once_and_a_tag_change_elsewhere_is_seen(db: Database) -> None:
    ids = await setup(db)
    mine, theirs = CachedResolver(), CachedResolver(max_age=3600)
    admin, devices = services(db, mine)
    policy = await admin.create(ids["sales"], "sales", {"camera": S(True, False)})
    async with db.session() as session:
        plain = await theirs.effective(session, ids["d0"], ids["sales"])
        assert theirs.tag_reads == 0  # no profile names a tag: tags are not even read
    change = ProfileChange(conditions={"tags_all": ["field"]}, settings={"camera": S(False, True)})
    await admin.add_profile(policy.id, "field", change, expected=None, by=None)
    async with db.session() as session:
        await theirs.refresh(session)
        for _ in range(5):
            assert (await theirs.effective(session, ids["d0"], ids["sales"])) == plain
        assert theirs.tag_reads == 1
    await devices.set_tags(ids["d0"], ["field", "x"], by="t")
    async with db.session() as session:
        await theirs.refresh(session)
        tagged = await theirs.effective(session, ids["d0"], ids["sales"])
        assert tagged.settings == {"camera": S(False, True)} and theirs.tag_reads == 2
        # Another device with the same relevant tags shares the computed result.
        await devices.set_tags(ids["d1"], ["field"], by="t")
        await theirs.refresh(session)
        assert (await theirs.effective(session, ids["d1"], ids["sales"])) is tagged
        assert (await theirs.effective(session, ids["d2"], ids["sales"])) == plain
    await devices.set_tags(ids["d0"], [], by="t")
    async with db.session() as session:
        await theirs.refresh(session)
        assert (await theirs.effective(session, ids["d0"], ids["sales"])) == plain
        assert (await theirs.effective(session, ids["d1"], ids["sales"])) is tagged  # d1's tags kept


async def test_a_group_move_changes_the_chain(db: Database) -> None:
    ids = await setup(db)
    resolver = CachedResolver(max_age=3600)
    admin, _ = services(db, resolver)
    await admin.create(ids["corp"], "corp", {"a": S(1, True)})
    async with db.session() as session:
        assert (await resolver.effective(session, ids["d0"], ids["sales"])).settings == {"a": S(1, True)}
    async with db.transaction() as session:
        await session.execute(update(Group).where(Group.id == ids["sales"]).values(parent_id=ids["other"]))
    async with db.session() as session:
        await resolver.refresh(session)
        assert (await resolver.effective(session, ids["d0"], ids["sales"])).version == ""


async def test_out_of_office_follows_the_clock(db: Database) -> None:
    ids = await setup(db)
    now = [datetime(2026, 12, 7, 10, 0, tzinfo=UTC)]  # a Monday, 10:00 UTC
    resolver = CachedResolver(clock=lambda: now[0])
    admin, _ = services(db, resolver)
    policy = await admin.create(ids["sales"], "sales", {"camera": S(True, False)})
    office = {"timezone": "UTC", "office_hours": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}
    await admin.add_profile(policy.id, "after-hours", ProfileChange(
        conditions={"out_of_office": office}, settings={"camera": S(False, True)}), expected=None, by=None)
    async with db.session() as session:
        at_work = await resolver.effective(session, ids["d0"], ids["sales"])
        assert at_work.settings == {"camera": S(True, False)}
        now[0] = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
        evening = await resolver.effective(session, ids["d0"], ids["sales"])
        assert evening.settings == {"camera": S(False, True)} and evening.version != at_work.version
        now[0] = datetime(2026, 12, 14, 9, 30, tzinfo=UTC)
        assert (await resolver.effective(session, ids["d0"], ids["sales"])) is at_work


async def test_the_applied_version_is_written_only_when_it_changes(db: Database) -> None:
    ids = await setup(db)
    resolver, other = CachedResolver(), CachedResolver()
    async with db.transaction() as session:
        await resolver.record_applied(session, ids["d0"], "v1")
    async with db.session() as session:
        row = await session.get(PolicyDevice, ids["d0"])
        assert row is not None and row.applied_version == "v1"
        first_at = row.applied_at
    with statements(db) as seen:
        async with db.transaction() as session:
            for _ in range(100):
                await resolver.record_applied(session, ids["d0"], "v1")
    assert not [s for s in seen if "policy_devices" in s]
    # Another replica without the cache: the conditional upsert leaves the row (and its time) alone.
    async with db.transaction() as session:
        await other.record_applied(session, ids["d0"], "v1")
    async with db.session() as session:
        stmt = select(PolicyDevice.applied_at).where(PolicyDevice.device_id == ids["d0"])
        assert await session.scalar(stmt) == first_at
    async with db.transaction() as session:
        await resolver.record_applied(session, ids["d0"], "v2")
    async with db.session() as session:
        assert (await session.scalar(select(PolicyDevice.applied_version))) == "v2"


async def test_cache_coherence_with_a_fresh_resolver_after_random_changes(db: Database) -> None:
    """Cache coherence: after every random change (policies, flags, locks, profiles, tags, a group
    move), a long-lived resolver that has only refreshed gives what a brand-new one computes."""
    import random

    from mdm.policies.views import PolicyExists, ProfileExists, UnknownSetting

    rng = random.Random(1313)
    ids = await setup(db)
    groups = [ids["corp"], ids["sales"], ids["other"]]
    devices = [ids["d0"], ids["d1"], ids["d2"]]
    cached = CachedResolver(max_age=3600)
    admin, tagging = services(db, CachedResolver())
    policies: dict[int, int] = {}
    keys, tags = ["a", "b", "c"], ["x", "y"]

    def doc() -> dict[str, PolicySetting]:
        return {k: S(rng.randint(0, 3), rng.random() < 0.4) for k in rng.sample(keys, rng.randint(0, 3))}

    # A start where a move and a tag always matter: locked values that differ above, a tagged profile.
    policies[ids["corp"]] = (await admin.create(ids["corp"], "corp", {"a": S("corp", True)})).id
    policies[ids["other"]] = (await admin.create(ids["other"], "other", {"a": S("other", True)})).id
    await admin.add_profile(policies[ids["corp"]], "tagged", ProfileChange(
        conditions={"tags_any": ["x"]}, settings={"t": S(True, True)}), expected=None, by=None)
    differences = {"move": 0, "tags": 0}
    for _ in range(150):
        op = rng.choice([0, 1, 2, 3, 4, 4, 4, 5, 5, 6])
        gid = rng.choice(groups)
        try:
            if op == 0 and gid not in policies:
                policies[gid] = (await admin.create(gid, f"g{gid}", doc(), inherit=rng.random() < 0.7,
                                                    force_inheritance=rng.random() < 0.2)).id
            elif op == 1 and gid in policies:
                await admin.update(policies[gid], PolicyChange(set=doc(), inherit=rng.random() < 0.7),
                                   expected=None)
            elif op == 2 and gid == ids["sales"] and gid in policies:
                await admin.set_active(policies[gid], rng.random() < 0.6, expected=None, by=None)
            elif op == 3 and gid in policies:
                conditions = {"tags_any": rng.sample(tags, rng.randint(0, 2))}
                change = ProfileChange(priority=rng.randint(-2, 2), conditions=conditions, settings=doc())
                await admin.add_profile(policies[gid], f"p{rng.randrange(3)}", change, expected=None, by=None)
            elif op == 4:
                await tagging.set_tags(rng.choice(devices), rng.sample(tags, rng.randint(0, 2)), by=None)
            elif op == 5:
                parent = rng.choice([None, ids["corp"], ids["other"]])
                async with db.transaction() as session:
                    stmt = update(Group).where(Group.id == ids["sales"]).values(parent_id=parent)
                    await session.execute(stmt)
            elif op == 6 and gid == ids["sales"] and gid in policies:
                await admin.delete(policies.pop(gid), expected=None, by=None)
        except (PolicyExists, ProfileExists, UnknownSetting):
            pass
        async with db.session() as session:
            before = [await cached.effective(session, d, ids["sales"]) for d in devices]
            await cached.refresh(session)
            fresh = CachedResolver()
            for device in devices:
                async with db.session() as other:
                    want = await fresh.effective(other, device, ids["sales"])
                assert await cached.effective(session, device, ids["sales"]) == want
                assert await cached.effective(session, device, ids["corp"]) == await fresh.effective(
                    session, device, ids["corp"])
            after = [await cached.effective(session, d, ids["sales"]) for d in devices]
            if op in (4, 5) and after != before:
                differences["move" if op == 5 else "tags"] += 1
    # The run did exercise what it checks: moves and tag changes that changed a device's policy.
    assert differences["move"] >= 3 and differences["tags"] >= 3, differences


async def test_a_stored_profile_that_no_longer_parses_is_skipped_not_fatal(db: Database) -> None:
    """A time zone the tz database lost (or a row edited by hand) must not break every sync."""
    from mdm.policies.tables import PolicyProfile

    ids = await setup(db)
    resolver = CachedResolver()
    admin, _ = services(db, resolver)
    policy = await admin.create(ids["sales"], "sales", {"a": S(1, False)})
    async with db.transaction() as session:
        session.add(PolicyProfile(policy_id=policy.id, name="broken", priority=0, active=True,
                                  conditions={"out_of_office": {"timezone": "Gone/Away", "office_hours": []}},
                                  settings={"a": {"value": 2, "locked": True}}))
    await admin.update(policy.id, PolicyChange(set={"b": S(1, False)}), expected=None)
    async with db.session() as session:
        assert (await resolver.effective(session, ids["d0"], ids["sales"])).settings == {
            "a": S(1, False), "b": S(1, False),
        }


async def test_a_change_is_in_this_replicas_snapshot_before_devices_are_woken(db: Database) -> None:
    """A refresh under way (the worker's, which may have read the revision before the commit) must
    not leave the woken devices' syncs with the old snapshot: the change refreshes first."""
    ids = await setup(db)
    resolver = CachedResolver()
    admin, _ = services(db, resolver)
    policy = await admin.create(ids["corp"], "corp", {"a": S(1, True)})
    async with db.session() as session:
        old = await resolver.effective(session, ids["d0"], ids["sales"])

    async def refresh_under_way() -> None:
        async with resolver._lock:  # what the policies.refresh worker holds while it reads
            await asyncio.sleep(1.0)

    worker = asyncio.create_task(refresh_under_way())
    await asyncio.sleep(0.05)
    await admin.update(policy.id, PolicyChange(set={"a": S(2, True)}), expected=None)
    async with db.session() as session:
        new = await resolver.effective(session, ids["d0"], ids["sales"])
    await worker
    assert new.settings == {"a": S(2, True)} and new.version != old.version
