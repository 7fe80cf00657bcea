"""Binding probes that arrive together share one statement on PostgreSQL
(``mdm.ios.store_binding_probe.CoalescedProbes``), and each answers exactly what its own
statement did: the device bound to its fingerprint (or None), the queue hint marked empty only
for a device with nothing queued, and a deletion committed before the probe is seen by it. On
SQLite each probe is its own look-up, with the same answers."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from ios_support import queue_command
from sqlalchemy import delete, select
from sqlalchemy.engine import Row

from mdm.bench import fleet_prepare
from mdm.config import Config
from mdm.core.identity import BoundDevice
from mdm.core.queue_hint import QueueHint
from mdm.db import point_read
from mdm.db.engine import Database
from mdm.ios import store_binding_probe
from mdm.ios.store_binding_probe import BINDING_PROBE_STMT, ProbingBindingSource
from mdm.ios.tables import IosDevice

TOPIC = "com.apple.mgmt.External.binding-probe-test"


async def _fleet(config: Config, db: Database, count: int) -> list[tuple[bytes, int]]:
    await fleet_prepare.prepare(config, count, topic=TOPIC, key_type="ec")
    async with db.session() as session:
        rows = (await session.execute(
            select(IosDevice.cert_fingerprint, IosDevice.device_id).order_by(IosDevice.device_id))).all()
    return [(bytes(fp), int(device_id)) for fp, device_id in rows]


def _source(db: Database) -> tuple[ProbingBindingSource, QueueHint]:
    hint = QueueHint(ttl=60.0, size=1000)
    return ProbingBindingSource(db.engine, hint), hint


async def test_probes_asked_together_answer_as_one_statement_each_would(config: Config, db: Database) -> None:
    fleet = await _fleet(config, db, 12)
    queued_device = fleet[3][1]
    await queue_command(db, queued_device, {"RequestType": "DeviceLock"}, type_="Block")
    source, hint = _source(db)
    unknown = hashlib.sha256(b"nobody").digest()
    asked = [fp for fp, _ in fleet] + [unknown, fleet[0][0]]  # an unbound one, a repeated one
    got = await asyncio.gather(*(source(fp) for fp in asked))
    alone: list[Row[Any] | None] = [await point_read.first(db.engine, BINDING_PROBE_STMT, {"fp": fp})
                                    for fp in asked]
    assert got == [None if row is None else BoundDevice(row.id, row.identifier, row.status) for row in alone]
    assert [b.id if b else None for b in got] == [d for _, d in fleet] + [None, fleet[0][1]]
    assert [hint.known_empty(d) for _, d in fleet] == [d != queued_device for _, d in fleet]
    if source.coalesced is not None:  # PostgreSQL: 14 probes asked in one iteration, one statement
        assert source.coalesced.statements == 1


async def test_a_burst_larger_than_the_statements_can_hold_is_answered_whole(
    config: Config, db: Database
) -> None:
    fleet = await _fleet(config, db, 40)
    source, _ = _source(db)
    asked = [fp for fp, _ in fleet] * 5  # 200 probes: more than IN_FLIGHT statements of MAX_BATCH
    got = await asyncio.gather(*(source(fp) for fp in asked))
    assert [b.id if b else None for b in got] == [d for _, d in fleet] * 5
    if source.coalesced is not None:
        assert 2 <= source.coalesced.statements < 200
        assert source.coalesced.running == 0 and source.coalesced.waiting == {}


async def test_a_binding_deleted_before_the_probe_is_not_found(config: Config, db: Database) -> None:
    fleet = await _fleet(config, db, 3)
    source, _ = _source(db)
    assert (await source(fleet[1][0])) is not None
    async with db.transaction() as session:
        await session.execute(delete(IosDevice).where(IosDevice.device_id == fleet[1][1]))
    got = await asyncio.gather(*(source(fp) for fp, _ in fleet))
    assert [b.id if b else None for b in got] == [fleet[0][1], None, fleet[2][1]]


async def test_a_cancelled_probe_leaves_the_others_answered(config: Config, db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL coalesces; on SQLite a probe never yields, nothing to cancel")
    fleet = await _fleet(config, db, 4)
    source, _ = _source(db)
    tasks = [asyncio.create_task(source(fp)) for fp, _ in fleet]
    await asyncio.sleep(0)  # all four asked
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [b.id for b in done if isinstance(b, BoundDevice)] == [fleet[i][1] for i in (0, 2, 3)]
    again = await source(fleet[1][0])
    assert again is not None and again.id == fleet[1][1]


async def test_a_failed_statement_fails_its_probes_and_the_next_ones_work(
    config: Config, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL coalesces; SQLite runs each probe on its own")
    fleet = await _fleet(config, db, 3)
    source, _ = _source(db)
    real = point_read.rows

    async def broken(*_args: Any) -> list[Row[Any]]:
        raise RuntimeError("connection lost")

    monkeypatch.setattr(store_binding_probe.point_read, "rows", broken)
    failed = await asyncio.gather(*(source(fp) for fp, _ in fleet), return_exceptions=True)
    assert all(isinstance(f, RuntimeError) for f in failed)
    monkeypatch.setattr(store_binding_probe.point_read, "rows", real)
    got = await asyncio.gather(*(source(fp) for fp, _ in fleet))
    assert [b.id if b else None for b in got] == [d for _, d in fleet]
