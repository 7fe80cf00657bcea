"""Command enqueue wakes the platform's pusher after the transaction commits: single and bulk
(grouped by protocol), never for an enqueue that failed or rolled back. Without a pusher the
command waits for the device's next poll (the delivery tests cover that)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from bulk_support import send_bulk
from sqlalchemy import func, select

from mdm.core import command_service
from mdm.db.engine import Database
from mdm.db.models import Command, Device, Protocol
from mdm.server.runtime import Server


class RecordingPusher:
    """Records each wake with the number of commands another connection can see for those
    devices at that moment: they must be committed already."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls: list[tuple[list[int], str, int]] = []

    async def _visible(self, device_ids: Sequence[int]) -> int:
        async with self.db.session() as session:
            stmt = select(func.count()).select_from(Command).where(Command.device_id.in_(device_ids))
            return int(await session.scalar(stmt) or 0)

    async def wake(self, device_id: int, reason: str) -> None:
        self.calls.append(([device_id], reason, await self._visible([device_id])))

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
        ids = sorted(device_ids)
        self.calls.append((ids, reason, await self._visible(ids)))

    async def wake_at(self, device_id: int, due: object, reason: str) -> None:
        raise AssertionError("enqueue wakes at once")


@pytest.fixture
def pushers(server: Server, db: Database) -> dict[Protocol, RecordingPusher]:
    recorders = {p: RecordingPusher(db) for p in (Protocol.KES, Protocol.EAS)}
    for protocol, pusher in recorders.items():
        server.ctx.pushers.unregister(protocol)  # KES: the sync's own (long polls, then FCM)
        server.ctx.pushers.register(protocol, pusher)
    return recorders


async def _device(db: Database, protocol: Protocol, identifier: str) -> int:
    async with db.transaction() as session:
        device = Device(protocol=protocol.value, identifier=identifier, inventory={}, attributes={})
        session.add(device)
        await session.flush()
        return device.id


async def test_single_enqueue_wakes_after_commit(
    api: httpx.AsyncClient, db: Database, pushers: dict[Protocol, RecordingPusher]
) -> None:
    dev = await _device(db, Protocol.KES, "kes-1")
    r = await api.post(f"/api/v1/devices/{dev}/commands", json={"type": "Block", "args": {}})
    assert r.status_code == 201, r.text
    assert pushers[Protocol.KES].calls == [([dev], "command", 1)]
    assert pushers[Protocol.EAS].calls == []


async def test_bulk_enqueue_wakes_each_protocol_once_after_commit(
    api: httpx.AsyncClient, db: Database, pushers: dict[Protocol, RecordingPusher]
) -> None:
    kes = [await _device(db, Protocol.KES, f"kes-{i}") for i in range(3)]
    eas = await _device(db, Protocol.EAS, "eas-1")
    op = await send_bulk(api, [*kes, eas, 999999], "RefreshDeviceInfo")
    assert (op["queued"], op["skipped"]) == (4, 1)
    reason = f"bulk:{op['id']}"
    assert pushers[Protocol.KES].calls == [(kes, reason, 3)]
    assert pushers[Protocol.EAS].calls == [([eas], reason, 1)]
    # Devices that cannot take the command are skipped and not woken.
    op = await send_bulk(api, "all", "Block")
    assert op["skipped_reasons"] == {"Block is not supported on eas devices": 1}
    assert pushers[Protocol.KES].calls[1:] == [(kes, f"bulk:{op['id']}", 6)]
    assert len(pushers[Protocol.EAS].calls) == 1


async def test_no_wake_when_the_enqueue_fails(
    api: httpx.AsyncClient, db: Database, pushers: dict[Protocol, RecordingPusher]
) -> None:
    dev = await _device(db, Protocol.KES, "kes-1")
    assert (await api.post(f"/api/v1/devices/{dev}/commands", json={"type": "Block"})).status_code == 201
    pushers[Protocol.KES].calls.clear()
    r = await api.post(f"/api/v1/devices/{dev}/commands", json={"type": "Block"})
    assert r.status_code == 409
    op = await send_bulk(api, [dev], "Block")
    assert (op["queued"], op["skipped"]) == (0, 1)
    assert pushers[Protocol.KES].calls == []


async def test_no_wake_when_the_transaction_rolls_back(
    api: httpx.AsyncClient,
    db: Database,
    pushers: dict[Protocol, RecordingPusher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dev = await _device(db, Protocol.KES, "kes-1")
    real = command_service.command_enqueue.enqueue_one

    async def written_then_failed(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise RuntimeError("the database went away before the commit")

    monkeypatch.setattr(command_service.command_enqueue, "enqueue_one", written_then_failed)
    monkeypatch.setattr(command_service, "DIRECT", False)  # the transactional path's rollback
    r = await api.post(f"/api/v1/devices/{dev}/commands", json={"type": "Block"})
    assert r.status_code == 500
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Command)) == 0
    assert pushers[Protocol.KES].calls == []


async def test_a_failing_pusher_loses_nothing(
    api: httpx.AsyncClient, db: Database, server: Server
) -> None:
    class Broken:
        async def wake(self, device_id: int, reason: str) -> None:
            raise ConnectionError("push gateway down")

        async def wake_many(self, device_ids: Sequence[int], reason: str) -> None:
            raise ConnectionError("push gateway down")

    server.ctx.pushers.unregister(Protocol.KES)  # the KES sync's own (long polls, then FCM)
    server.ctx.pushers.register(Protocol.KES, Broken())
    dev = await _device(db, Protocol.KES, "kes-1")
    r = await api.post(f"/api/v1/devices/{dev}/commands", json={"type": "Block"})
    assert r.status_code == 201, r.text
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Command)) == 1
