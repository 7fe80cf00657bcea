"""Helpers of the push dispatcher tests: a scripted transport, a settable clock, devices and
queued commands written straight to the core tables."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.db.models import Command, CommandQueueEntry, Device, Event, Protocol
from mdm.push.tables import PushWakeup
from mdm.push.types import Outcome, PushResult, WakeTarget

SENT = PushResult(Outcome.SENT, status=200)


class ScriptedTransport:
    """A ``PushTransport`` answering, per token, the scripted results in order (then ``default``);
    an exception in the script is raised, as a broken transport would."""

    def __init__(self, default: PushResult = SENT) -> None:
        self.default = default
        self.script: dict[str, list[PushResult | Exception]] = {}
        self.sent: list[WakeTarget] = []
        self.closed = False
        self.got = asyncio.Event()

    def answer(self, token: str, *results: PushResult | Exception) -> None:
        self.script.setdefault(token, []).extend(results)

    async def send(self, target: WakeTarget, *, expires: datetime | None = None) -> PushResult:
        self.sent.append(target)
        self.got.set()
        await asyncio.sleep(0)
        queue = self.script.get(target.token)
        result = queue.pop(0) if queue else self.default
        if isinstance(result, Exception):
            raise result
        return result

    async def close(self) -> None:
        self.closed = True

    def tokens(self) -> list[str]:
        return [t.token for t in self.sent]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


async def add_device(
    db: Database, identifier: str, *, token: str | None = "tok", valid: bool = True,
    protocol: Protocol = Protocol.IOS, last_seen_at: datetime | None = None,
    enrolled_at: datetime | None = None,
) -> int:
    async with db.transaction() as session:
        device = Device(
            protocol=protocol.value, identifier=identifier, inventory={}, attributes={},
            push_token=token, push_magic=f"magic-{identifier}" if token else None, push_valid=valid,
            last_seen_at=last_seen_at, enrolled_at=enrolled_at or datetime.now(UTC),
        )
        session.add(device)
        await session.flush()
        return device.id


async def queue_command(db: Database, device_id: int, *, not_before: datetime | None = None) -> int:
    async with db.transaction() as session:
        command = Command(guid=str(uuid.uuid4()), device_id=device_id, type="DeviceInformation",
                          args={}, payload={})
        session.add(command)
        await session.flush()
        session.add(CommandQueueEntry(command_id=command.id, device_id=device_id, not_before=not_before))
        return command.id


async def clear_queue(db: Database, device_id: int) -> None:
    async with db.transaction() as session:
        for entry in (await session.scalars(
            select(CommandQueueEntry).where(CommandQueueEntry.device_id == device_id)
        )).all():
            await session.delete(entry)


async def wakeups(db: Database) -> dict[int, PushWakeup]:
    async with db.session() as session:
        return {w.device_id: w for w in (await session.scalars(select(PushWakeup))).all()}


async def events_of(db: Database, type_name: str) -> list[Event]:
    async with db.session() as session:
        return list((await session.scalars(select(Event).where(Event.type == type_name))).all())


async def device(db: Database, device_id: int) -> Device:
    async with db.session() as session:
        found = await session.get(Device, device_id)
        assert found is not None
        return found


async def set_device(db: Database, device_id: int, **values: object) -> None:
    async with db.transaction() as session:
        found = await session.get(Device, device_id)
        assert found is not None
        for key, value in values.items():
            setattr(found, key, value)


async def count_wakeups(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(PushWakeup)) or 0)
