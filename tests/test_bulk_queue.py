"""Bulk operations queued batch by batch through the service (no worker running): exact counts,
one command + one queue row + one journal row per queued device, batches that never exceed the
batch size, devices that cannot take the command, two operations racing, a recall while queuing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import pytest
from bulk_support import add_devices, count
from sqlalchemy import select

from mdm.core.bulk import BulkService, NoTargets
from mdm.core.errors import ArgumentsRefused, NotFound
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import (
    BulkOperation,
    BulkSkipped,
    Command,
    CommandJournalEntry,
    CommandQueueEntry,
    Event,
    Group,
    Protocol,
)
from mdm.ios.commands import IosCommandTranslator


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[int], str]] = []

    async def wake(self, device_id: int, reason: str) -> None:
        self.calls.append(([device_id], reason))

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        self.calls.append((list(device_ids), reason))

    async def wake_at(self, device_id: int, due: object, reason: str) -> None:
        raise AssertionError("bulk wakes at once")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def service(db: Database, recorder: Recorder, batch_size: int = 7) -> BulkService:
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    pushers = Pushers()
    pushers.register(Protocol.IOS, recorder)
    return BulkService(db, translators, pushers, batch_size=batch_size)


async def run_to_end(svc: BulkService, bulk_id: int) -> int:
    steps = 1
    while await svc.step(bulk_id):
        steps += 1
    return steps


async def op_row(db: Database, bulk_id: int) -> BulkOperation:
    async with db.session() as session:
        op = await session.get(BulkOperation, bulk_id)
        assert op is not None
        return op


async def assert_consistent(db: Database, bulk_id: int, queued: int, no_handler: Sequence[int] = ()) -> None:
    """Every command of the operation has its queue row and its one "queued" journal row."""
    mine = select(Command.id).where(Command.bulk_id == bulk_id)
    assert await count(db, mine) == queued
    assert await count(db, select(CommandQueueEntry).where(CommandQueueEntry.command_id.in_(mine))) == queued
    journal = select(CommandJournalEntry).where(CommandJournalEntry.command_id.in_(mine))
    assert await count(db, journal) == queued
    async with db.session() as session:
        details = dict((await session.execute(select(Command.device_id, CommandJournalEntry.detail).join(
            Command, Command.id == CommandJournalEntry.command_id).where(Command.bulk_id == bulk_id))).all())
    waits = "queued; no protocol handler is registered yet, delivery waits for one"
    expected = {d: f"{waits if d in no_handler else 'queued'} (bulk operation {bulk_id})" for d in details}
    assert details == expected


async def test_all_in_batches_with_exact_counts_and_events(db: Database, recorder: Recorder) -> None:
    ids = await add_devices(db, 30)
    svc = service(db, recorder, batch_size=7)
    op = await svc.create("Block", {"message": "lost"}, by="alice")
    assert (op.state, op.targeted, op.queued) == ("queuing", 30, 0)
    # Nothing is queued by the request itself.
    assert await count(db, select(Command.id)) == 0
    steps = await run_to_end(svc, op.id)
    assert steps == 5  # 7+7+7+7+2
    done = await op_row(db, op.id)
    assert (done.state, done.targeted, done.queued, done.skipped) == ("queued", 30, 30, 0)
    assert done.cursor == ids[-1]
    assert done.finished_at is not None and done.request_args is None
    await assert_consistent(db, op.id, 30)
    async with db.session() as session:
        commands = (await session.scalars(select(Command).where(Command.bulk_id == op.id))).all()
        events = (await session.scalars(select(Event).order_by(Event.id))).all()
    assert sorted(c.device_id for c in commands) == ids
    assert all(c.payload == {"RequestType": "DeviceLock", "Message": "lost"} for c in commands)
    assert all(c.guid == c.guid.upper() and c.created_by == "alice" and c.active for c in commands)
    # RFC 9562 version 7 (time-ordered): a batch's GUIDs land at the end of the unique index
    # instead of on random pages of it (at 10^6 commands the random pages were the cost).
    parsed = [uuid.UUID(c.guid) for c in commands]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(parsed)) == 30
    by_batch = sorted(commands, key=lambda c: c.id)
    stamps = [uuid.UUID(c.guid).int >> 80 for c in by_batch]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] / 1000 - time.time()) < 600
    kinds = [e.type for e in events]
    assert kinds == [
        "bulk_command_created", "commands_created", "commands_created", "bulk_operation_progress",
        "commands_created", "bulk_operation_progress", "commands_created", "bulk_operation_progress",
        "commands_created", "bulk_command_queued",
    ]  # progress at 25, 50 and 75 % (after 14, 21 and 28 of 30 devices)
    batches = [e.body for e in events if e.type == "commands_created"]
    # The batch never exceeds the batch size: 5 transactions of at most 7 commands.
    assert [b["count"] for b in batches] == [7, 7, 7, 7, 2]
    pairs = {(d, g) for b in batches for d, g in b["commands"]}
    assert pairs == {(c.device_id, c.guid) for c in commands}
    assert events[-1].body == {"bulk": op.id, "command_type": "Block", "targeted": 30, "queued": 30,
                               "skipped": 0, "skipped_reasons": {}}
    # Woken after each batch with the operation's reason.
    assert [len(i) for i, _ in recorder.calls] == [7, 7, 7, 7, 2]
    assert {r for _, r in recorder.calls} == {f"bulk:{op.id}"}
    assert sorted(d for i, _ in recorder.calls for d in i) == ids


async def test_group_with_subgroups_and_devices_enrolled_later(db: Database, recorder: Recorder) -> None:
    async with db.transaction() as session:
        top = Group(name="top")
        session.add(top)
        await session.flush()
        child = Group(name="child", parent_id=top.id)
        session.add(child)
        await session.flush()
        top_id, child_id = top.id, child.id
    a = await add_devices(db, 3, prefix="a", group_id=top_id)
    b = await add_devices(db, 4, prefix="b", group_id=child_id)
    await add_devices(db, 5, prefix="c")
    svc = service(db, recorder, batch_size=2)
    op = await svc.create("Locate", None, group=top_id, by=None)
    assert op.targeted == 7
    await svc.step(op.id)
    await add_devices(db, 2, prefix="late", group_id=top_id)  # after the request: not targeted
    await run_to_end(svc, op.id)
    done = await op_row(db, op.id)
    assert (done.targeted, done.queued, done.skipped) == (7, 7, 0)
    async with db.session() as session:
        got = (await session.scalars(select(Command.device_id).where(Command.bulk_id == op.id))).all()
    assert sorted(got) == sorted(a + b)
    await assert_consistent(db, op.id, 7)
    with pytest.raises(NotFound, match="no group 999"):
        await svc.create("Locate", None, group=999, by=None)


async def test_unsupported_devices_and_unknown_ids_are_skipped_with_reasons(
    db: Database, recorder: Recorder
) -> None:
    ios = await add_devices(db, 4)
    mac = await add_devices(db, 2, prefix="mac", os_name="macOS")
    kes = await add_devices(db, 3, Protocol.KES, prefix="kes", os_name=None)
    svc = service(db, recorder, batch_size=4)
    # An iOS-only command to a mixed fleet.
    op = await svc.create("EditRoamingSettings", {"voice_roaming": True}, by=None)
    await run_to_end(svc, op.id)
    done = await op_row(db, op.id)
    assert (done.targeted, done.queued, done.skipped) == (9, 6, 3)
    assert done.skipped_reasons == {"EditRoamingSettings is not supported on kes devices": 3}
    # A command whose translation depends on the platform: one variant queued, one skipped; KES
    # has no translator here, so its devices are queued with the arguments alone.
    op = await svc.create("Block", {"pin": "123456"}, by=None)
    await run_to_end(svc, op.id)
    done = await op_row(db, op.id)
    assert (done.targeted, done.queued, done.skipped) == (9, 5, 4)
    assert done.skipped_reasons == {"Block: pin applies to macOS only; this device runs iOS": 4}
    async with db.session() as session:
        queued = dict((await session.execute(
            select(Command.device_id, Command.payload).where(Command.bulk_id == op.id))).all())
    lock = {"RequestType": "DeviceLock", "PIN": "123456"}
    assert queued == {**{m: lock for m in mac}, **{k: {} for k in kes}}
    await assert_consistent(db, op.id, 5, no_handler=kes)
    # A Raw command that fails Apple's schema, to a list with an unknown id.
    op = await svc.create("Raw", {"RequestType": "DeviceLock", "Foo": 1}, device_ids=[*ios, *mac, 424242],
                          by=None)
    await run_to_end(svc, op.id)
    done = await op_row(db, op.id)
    assert (done.targeted, done.queued, done.skipped) == (7, 0, 7)
    async with db.session() as session:
        skipped = dict((await session.execute(
            select(BulkSkipped.device_id, BulkSkipped.reason).where(BulkSkipped.bulk_id == op.id)
        )).all())
    schema = "Raw: DeviceLock does not match Apple's schema: Foo: unknown key"
    assert skipped == {424242: "no such device", **{d: schema for d in [*ios, *mac]}}
    assert done.skipped_reasons == {"no such device": 1, schema: 6}
    # Arguments no protocol takes: refused before anything is recorded.
    before = await count(db, select(BulkOperation.id))
    with pytest.raises(ArgumentsRefused, match="unknown argument"):
        await svc.create("InstallConfProf", {"nope": 1}, by=None)
    assert await count(db, select(BulkOperation.id)) == before


async def test_empty_targets_record_nothing(db: Database, recorder: Recorder) -> None:
    svc = service(db, recorder)
    with pytest.raises(NoTargets, match="no device"):
        await svc.create("Block", None, by=None)
    async with db.transaction() as session:
        group = Group(name="empty")
        session.add(group)
        await session.flush()
        gid = group.id
    with pytest.raises(NoTargets, match=f"group {gid} and its subgroups have no device"):
        await svc.create("Block", None, group=gid, by=None)
    with pytest.raises(NoTargets, match="none of the 2 device id"):
        await svc.create("Block", None, device_ids=[5, 6], by=None)
    assert await count(db, select(BulkOperation.id)) == 0
    assert await count(db, select(Event.id)) == 0


async def test_two_operations_of_the_same_type_racing(db: Database, recorder: Recorder) -> None:
    ids = await add_devices(db, 25)
    a_svc, b_svc = service(db, recorder, batch_size=4), service(db, recorder, batch_size=6)
    a = await a_svc.create("Block", None, by="a")
    b = await b_svc.create("Block", None, by="b")
    # Concurrently, as two replicas would run them (on PostgreSQL the transactions overlap).
    await asyncio.gather(run_to_end(a_svc, a.id), run_to_end(b_svc, b.id))
    op_a, op_b = await op_row(db, a.id), await op_row(db, b.id)
    assert op_a.queued + op_b.queued == 25
    assert op_a.queued + op_a.skipped == 25 and op_b.queued + op_b.skipped == 25
    for op in (op_a, op_b):  # the loser of each device says why
        busy = {"already has an active Block command": op.skipped}
        assert op.skipped_reasons == (busy if op.skipped else {})
    async with db.session() as session:
        per_device = (await session.execute(
            select(Command.device_id).where(Command.active.is_(True))
        )).scalars().all()
    assert sorted(per_device) == ids  # exactly one active Block each
    await assert_consistent(db, a.id, op_a.queued)
    await assert_consistent(db, b.id, op_b.queued)


async def test_recall_while_queuing(db: Database, recorder: Recorder) -> None:
    await add_devices(db, 20)
    svc = service(db, recorder, batch_size=6)
    op = await svc.create("Wipe", None, by="alice")
    await svc.step(op.id)
    await svc.step(op.id)
    # One command is delivered meanwhile: it is left to finish.
    async with db.transaction() as session:
        first = await session.scalar(select(Command).where(Command.bulk_id == op.id).order_by(Command.id))
        assert first is not None
        first.delivered_at = first.created_at
        first.attempts = 1
        first_id = first.id
    recalled = await svc.recall(op.id, by="bob")
    assert (recalled.state, recalled.queued, recalled.recalled) == ("recalled", 12, 11)
    assert await svc.step(op.id) is False  # the worker stops: no more queuing
    mine = select(Command.id).where(Command.bulk_id == op.id)
    assert await count(db, mine) == 12
    left = select(CommandQueueEntry.command_id).where(CommandQueueEntry.command_id.in_(mine))
    async with db.session() as session:
        assert (await session.scalars(left)).all() == [first_id]
        statuses = (await session.execute(
            select(Command.status, Command.active).where(Command.bulk_id == op.id, Command.id != first_id)
        )).all()
        journal = (await session.scalars(select(CommandJournalEntry.detail).where(
            CommandJournalEntry.status == "removed"))).all()
        events = (await session.scalars(select(Event).where(Event.type == "bulk_command_recalled"))).all()
    assert set(statuses) == {("removed", None)}
    assert len(journal) == 11
    assert set(journal) == {f"recalled by bob before delivery (bulk operation {op.id})"}
    assert sum(e.body["count"] for e in events) == 11
    again = await svc.recall(op.id, by="bob")
    assert (again.state, again.recalled) == ("recalled", 11)


async def test_devices_that_already_have_the_command_are_skipped_and_not_woken(
    db: Database, recorder: Recorder
) -> None:
    """A batch in which some devices are busy: only the others get a command, a queue row, a
    journal row, a place in the batch's event (whose body the database builds: the catalog's
    fields, count = pairs, in command order) and a wake-up."""
    ids = await add_devices(db, 12)
    busy = [*ids[2:5], ids[9]]
    svc = service(db, recorder, batch_size=5)
    first = await svc.create("Block", None, device_ids=busy, by="a")
    await run_to_end(svc, first.id)
    recorder.calls.clear()
    op = await svc.create("Block", None, by="b")
    await run_to_end(svc, op.id)
    done = await op_row(db, op.id)
    assert (done.queued, done.skipped) == (8, 4)
    assert done.skipped_reasons == {"already has an active Block command": 4}
    await assert_consistent(db, op.id, 8)
    free = [d for d in ids if d not in busy]
    assert sorted(d for i, _ in recorder.calls for d in i) == free
    async with db.session() as session:
        bodies = (await session.scalars(
            select(Event.body).where(Event.type == "commands_created").order_by(Event.id)
        )).all()
        by_device = dict((await session.execute(
            select(Command.device_id, Command.guid).where(Command.bulk_id == op.id)
        )).all())
        order = (await session.scalars(
            select(Command.device_id).where(Command.bulk_id == op.id).order_by(Command.id)
        )).all()
        skipped = (await session.scalars(
            select(BulkSkipped.device_id).where(BulkSkipped.bulk_id == op.id).order_by(BulkSkipped.device_id)
        )).all()
    mine = [b for b in bodies if b["bulk"] == op.id]
    assert [list(b) for b in mine] == [["bulk", "command_type", "count", "commands"]] * 3
    assert [b["count"] for b in mine] == [2, 4, 2]  # batches of 5: 2 + 3 busy, 4 + 1 busy, 2
    assert all(b["command_type"] == "Block" and b["count"] == len(b["commands"]) for b in mine)
    pairs = [tuple(p) for b in mine for p in b["commands"]]
    assert pairs == [(d, by_device[d]) for d in order]
    assert list(skipped) == busy


async def test_the_request_counts_its_targets_outside_the_write_transaction(
    db: Database, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting the targets reads every device (280 ms at 10^6 on SQLite): the request's write
    transaction, which holds SQLite's writer and every check-in behind it, only records."""
    from sql_capture import sent_in_write_transactions

    async with db.transaction() as session:
        group = Group(name="g")
        session.add(group)
        await session.flush()
        group_id = group.id
    ids = await add_devices(db, 3) + await add_devices(db, 2, prefix="g", group_id=group_id)
    with sent_in_write_transactions(db, monkeypatch) as written:
        svc = service(db, recorder)
        everyone = await svc.create("Block", None, by=None)
        in_group = await svc.create("Locate", None, group=group_id, by=None)
        listed = await svc.create("Block", None, device_ids=ids[:2], by=None)
    assert (everyone.targeted, in_group.targeted, listed.targeted) == (5, 2, 2)
    assert [s for s in written if "count(" in s.lower()] == []


async def test_a_recall_batch_that_failed_is_recalled_again_and_a_delivered_one_stays(
    db: Database, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each recall batch walks on from the last command the previous one read; the position
    moves only once a batch committed, so a batch rolled back is recalled again; a delivered
    command among them is passed over and left to finish."""
    from mdm.core import bulk as bulk_module

    await add_devices(db, 9)
    svc = service(db, recorder, batch_size=2)
    op = await svc.create("Wipe", None, by="alice")
    await run_to_end(svc, op.id)
    async with db.transaction() as session:  # the third command is delivered meanwhile
        third = (await session.scalars(select(Command).where(Command.bulk_id == op.id).order_by(Command.id)))
        delivered = list(third)[2]
        delivered.delivered_at, delivered.attempts = delivered.created_at, 1
    real_emit, failures = bulk_module.events.emit, [1]

    def emit_failing_once(*args: object, **kwargs: object) -> None:
        if failures:
            failures.pop()
            raise RuntimeError("the batch's transaction fails")
        real_emit(*args, **kwargs)  # type: ignore[arg-type]

    async with db.transaction() as session:
        row = await session.get(BulkOperation, op.id)
        assert row is not None
        row.state = "recalling"
    monkeypatch.setattr(bulk_module.events, "emit", emit_failing_once)
    monkeypatch.setattr(bulk_module.asyncio, "sleep", _no_sleep)
    await run_to_end(svc, op.id)  # the first batch fails once (retried by step), then on
    final = await op_row(db, op.id)
    assert (final.state, final.queued, final.recalled) == ("recalled", 9, 8)
    mine = select(Command.id).where(Command.bulk_id == op.id)
    async with db.session() as session:
        left = (await session.scalars(
            select(CommandQueueEntry.command_id).where(CommandQueueEntry.command_id.in_(mine)))).all()
    assert left == [delivered.id]


async def _no_sleep(_seconds: float) -> None:
    return None
