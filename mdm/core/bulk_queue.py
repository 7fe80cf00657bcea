"""One batch of a bulk operation (``mdm.core.bulk``), inside the caller's transaction.

The targets after the cursor are read with a few columns as plain tuples; each is classified by the
translation of its *variant* (the translator's ``bulk_key``: devices with the same key get the same
payload, so a fleet of one OS model is translated once, and the key is computed once per distinct
facts of the batch), or translated one by one from an ORM load when the translation reads
per-device detail; then the commands are written by one INSERT ... SELECT ... ON CONFLICT DO
NOTHING per variant (the ids in one parameter; the one-active-per-type rule: a device that already
has one is skipped), their queue and journal rows and the batch's ``commands_created`` event (its
body built by the database) by INSERT ... SELECT over the ids above the highest before the batch,
the skipped rows, and the operation's cursor and counters, all in that transaction. Nothing per
device comes back from the database unless a device was skipped as busy.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events, library, store_devices
from mdm.core import store_bulk as store
from mdm.core import store_bulk_batch as batch_store
from mdm.core.errors import InvalidArgument, Unsupported
from mdm.core.event_types import BULK_COMMAND_QUEUED, BULK_OPERATION_PROGRESS, COMMANDS_CREATED
from mdm.core.library import BulkKey, CommandType, DeviceFacts, Translators
from mdm.db.models import BulkOperation, BulkState, CommandStatus, Device, Protocol, utcnow

NO_SUCH_DEVICE = "no such device"
NO_HANDLER = "queued; no protocol handler is registered yet, delivery waits for one"


@dataclass(frozen=True, slots=True)
class Variant:
    """What every device of one variant gets: its payload and stored arguments, or why not."""

    payload: dict[str, Any] | None
    public_args: dict[str, Any] | None
    reason: str | None = None


@dataclass
class Plan:
    """The translation state of one operation, kept between its batches by this process."""

    ctype: CommandType
    args: dict[str, Any]
    keys: dict[int, BulkKey | None]
    variants: dict[tuple[int, Hashable], Variant] = field(default_factory=dict)

    @property
    def attributes(self) -> bool:
        return any(k is not None and k.attributes for k in self.keys.values())


def make_plan(op: BulkOperation, translators: Translators) -> Plan:
    ctype = library.lookup(op.type)
    args = dict(op.request_args or {})
    keys = {p.value: translators.bulk_key(ctype, args, p) for p in ctype.protocols}
    return Plan(ctype, args, keys)


def _translate(plan: Plan, translators: Translators, device: Device) -> Variant:
    try:
        payload = translators.translate(plan.ctype, plan.args, device)
    except (Unsupported, InvalidArgument) as exc:
        return Variant(None, None, exc.message)
    return Variant(payload, translators.public_args(plan.ctype, plan.args, device))


def _unsupported(ctype: CommandType, protocol: int) -> str:
    return f"{ctype.name} is not supported on {Protocol(protocol).name.lower()} devices"


@dataclass
class BatchOutcome:
    done: bool  # the operation has no target left (or is no longer queuing)
    woken: dict[int, list[int]] = field(default_factory=dict)  # protocol -> device ids queued


async def queue_batch(
    session: AsyncSession, op: BulkOperation, plan: Plan, translators: Translators, batch_size: int
) -> BatchOutcome:
    """One batch of ``op`` (row-locked by the caller and still queuing)."""
    ctype = plan.ctype
    rows = await store.batch_targets(session, op, batch_size, attributes=plan.attributes)
    keys = plan.keys
    per_device = [r[0] for r in rows if r[1] in keys and keys[r[1]] is None]
    loaded = {d.id: d for d in await store_devices.devices_by_id(session, per_device)} if per_device else {}
    now = utcnow()
    skipped: list[tuple[int, str]] = []
    common: dict[str, Any] = {
        "type": ctype.name, "flags": 0, "priority": ctype.priority, "status": CommandStatus.PROCESSING.value,
        "result_info": None, "result_data": None, "created_by": op.created_by, "created_at": now,
        "updated_at": now, "delivered_at": None, "finished_at": None, "attempts": 0, "active": True,
        "bulk_id": op.id,
    }
    by_variant: dict[tuple[int, Hashable], list[int]] = {}  # devices that share a payload
    one_by_one: list[dict[str, Any]] = []  # payloads translated per device
    by_protocol: dict[int, list[int]] = {}  # the devices given a command, by protocol
    # The variant of the facts seen in this batch: a key reads the facts, never the id, so equal
    # facts (without attributes) need the key computed once, not per device.
    variant_of: dict[tuple[int, str | None, str | None], tuple[int, Hashable]] = {}
    for device_id, protocol, os_name, model, attributes in rows:
        if protocol is None:
            skipped.append((device_id, NO_SUCH_DEVICE))
            continue
        if protocol not in keys:
            skipped.append((device_id, _unsupported(ctype, protocol)))
            continue
        key = keys[protocol]
        if key is None:
            device = loaded.get(device_id)
            if device is None:  # deleted between the two reads (PostgreSQL, read committed)
                skipped.append((device_id, NO_SUCH_DEVICE))
                continue
            variant = _translate(plan, translators, device)
            if variant.reason is None:
                one_by_one.append({**common, "guid": str(uuid.uuid4()).upper(), "device_id": device_id,
                                   "args": variant.public_args, "payload": variant.payload})
        else:
            facts_key = (protocol, os_name, model)
            vkey = None if key.attributes else variant_of.get(facts_key)
            if vkey is None:
                facts = DeviceFacts(device_id, protocol, os_name, model, attributes or {})
                vkey = (protocol, key.key(facts))
                if vkey not in plan.variants:
                    plan.variants[vkey] = _translate(plan, translators, facts.as_device())
                if not key.attributes:
                    variant_of[facts_key] = vkey
            variant = plan.variants[vkey]
            if variant.reason is None:
                by_variant.setdefault(vkey, []).append(device_id)
        if variant.reason is not None:
            skipped.append((device_id, variant.reason))
            continue
        by_protocol.setdefault(protocol, []).append(device_id)
    wanted = sum(len(ids) for ids in by_protocol.values())
    no_handler = [p for p in by_protocol if translators.get(p) is None]
    detail, waits = f"queued (bulk operation {op.id})", f"{NO_HANDLER} (bulk operation {op.id})"
    event = events.event_values(COMMANDS_CREATED, bulk=op.id, command_type=ctype.name, count=wanted,
                                commands=[])
    created, got = 0, None
    if wanted:
        written = _Written(op.id, now, detail, waits, no_handler, event)
        created, got = await written.write(session, plan, common, by_variant, one_by_one, wanted)
    if got is not None:  # some already had an active command of the type
        busy = f"already has an active {ctype.name} command"
        skipped += [(d, busy) for ids in by_protocol.values() for d in ids if d not in got]
        by_protocol = {p: kept for p, ids in by_protocol.items() if (kept := [d for d in ids if d in got])}
    outcome = BatchOutcome(done=len(rows) < batch_size, woken=by_protocol)
    skipped.sort()
    await store.add_skipped(session, op.id, skipped)
    if rows:
        op.cursor = rows[-1][0]
    op.queued += created
    op.skipped += len(skipped)
    if skipped:
        reasons = dict(op.skipped_reasons or {})
        for _, reason in skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        op.skipped_reasons = reasons
    op.updated_at = now
    if outcome.done:
        finish_queuing(session, op)
    else:
        _report_progress(session, op, done_before=op.queued + op.skipped - created - len(skipped))
    return outcome


@dataclass(frozen=True)
class _Written:
    """How a batch's commands are written (``store_bulk_batch``): what every one of them shares."""

    bulk_id: int
    now: datetime
    detail: str  # of the first journal row
    waits: str  # of the first journal row of a protocol without a translator
    no_handler: list[int]
    event: dict[str, Any]  # the commands_created outbox row (its body is made by the database)

    async def write(
        self, session: AsyncSession, plan: Plan, common: dict[str, Any],
        by_variant: dict[tuple[int, Hashable], list[int]], one_by_one: list[dict[str, Any]], wanted: int,
    ) -> tuple[int, set[int] | None]:
        """The commands, queue rows, journal rows and event: how many commands, and the devices
        that got one when that is fewer than ``wanted`` (else None)."""
        args = (self.detail, self.event, self.no_handler, self.waits)
        if not one_by_one and len(by_variant) == 1 and batch_store.one_statement(session):
            [(vkey, ids)] = by_variant.items()
            variant = plan.variants[vkey]
            values = {**common, "args": variant.public_args, "payload": variant.payload}
            got = await batch_store.write_variant(session, values, ids, *args)
            return len(got), (set(got) if len(got) < wanted else None)
        after_id = await batch_store.last_command_id(session)
        created = await batch_store.insert_commands(session, one_by_one)
        for vkey, ids in by_variant.items():
            variant = plan.variants[vkey]
            values = {**common, "args": variant.public_args, "payload": variant.payload}
            created += await batch_store.insert_for_devices(session, values, ids)
        if not created:
            return 0, set()
        written = (after_id, await batch_store.last_command_id(session))
        await batch_store.queue_journal_event(session, self.bulk_id, written, self.now, *args)
        if created < wanted:
            return created, set(await batch_store.created_devices(session, self.bulk_id, written))
        return created, None


PROGRESS_STEPS = (25, 50, 75)  # percent; the end is bulk_command_queued


def _report_progress(session: AsyncSession, op: BulkOperation, *, done_before: int) -> None:
    """One ``bulk_operation_progress`` when this batch crossed a step of ``PROGRESS_STEPS``: at
    most three per operation whatever its size, and exactly once each across restarts (the
    counters it compares move in this transaction)."""
    if op.targeted <= 0:
        return
    done = op.queued + op.skipped
    crossed = [p for p in PROGRESS_STEPS if done_before * 100 < p * op.targeted <= done * 100]
    if crossed:
        events.emit(session, BULK_OPERATION_PROGRESS, bulk=op.id, command_type=op.type, percent=crossed[-1],
                    processed=done, targeted=op.targeted, queued=op.queued, skipped=op.skipped)


def finish_queuing(session: AsyncSession, op: BulkOperation) -> None:
    """Every target is done: devices deleted since the request are no longer counted."""
    op.state = BulkState.QUEUED.value
    op.targeted = op.queued + op.skipped
    op.finished_at = op.updated_at = utcnow()
    op.request_args = None  # may hold secrets; the commands carry what they need
    events.emit(session, BULK_COMMAND_QUEUED, bulk=op.id, command_type=op.type, targeted=op.targeted,
                queued=op.queued, skipped=op.skipped, skipped_reasons=dict(op.skipped_reasons or {}))
