"""A device's own queue look-ups stay on the device's queue rows when PostgreSQL's statistics are
older than the queue: the first bulk command after a quiet time (or after preparing a fleet)
grows ``commands`` by 10^6 rows in a minute while its statistics still say that almost no
command is ``processing``. PostgreSQL then planned each device's next-command look-up (and the
cold poll's queue probe, and the EAS executor's due commands) as a walk of every processing
command through the bulk operations' ``(bulk_id, status)`` index, probing the queue for each:
measured at 10^6, 21,000 buffers and 31 ms per look-up, 1,000 answering devices costing 31 s of
PostgreSQL's CPU while it queued (the first run after a preparation queued in 67 s). The
command's status is now a sub-select by key (``mdm.core.store_queue_order``): the queue rows
drive, whatever the statistics.

The rows are added in the same transaction as the EXPLAINs, so autovacuum cannot analyze them
in between."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mdm.core import store_commands, store_delivery_direct, store_due
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.ios import store as ios_store
from mdm.ios import store_binding_probe

QUEUED = 20_000
FEW = 30


def _fingerprint(device: int) -> bytes:
    return bytes.fromhex("ab" * 24) + device.to_bytes(8, "big")


async def _devices(conn: AsyncConnection, first: int, last: int) -> None:
    await conn.execute(text(
        "INSERT INTO devices (id, protocol, identifier, inventory, attributes, status, supported_commands, "
        "enrolled_at, push_valid) SELECT i, 1, 'd' || i, '{}', '{}', 'ok', 0, now(), true "
        f"FROM generate_series({first}, {last}) i"
    ))
    await conn.execute(text(  # the fingerprints of ``_fingerprint``
        "INSERT INTO ios_devices (device_id, cert_fingerprint, awaiting_configuration, bound_at, "
        "updated_at) SELECT i, decode(repeat('ab', 24), 'hex') || int8send(i::bigint), false, now(), now() "
        f"FROM generate_series({first}, {last}) i"
    ))


async def _commands(
    conn: AsyncConnection, first: int, last: int, status: str, bulk: str, queued: bool
) -> None:
    await conn.execute(text(
        "INSERT INTO commands (id, guid, device_id, type, args, payload, flags, priority, status, "
        "created_at, updated_at, attempts, active, bulk_id) SELECT i, 'g' || i, i, 'Block', '{}', '{}', "
        f"0, 0, '{status}', now(), now(), 0, NULL, {bulk} FROM generate_series({first}, {last}) i"
    ))
    if queued:
        await conn.execute(text(
            "INSERT INTO command_queue (command_id, device_id, priority, created_at, in_flight, "
            f"not_now_count) SELECT i, i, 0, now(), false, 0 FROM generate_series({first}, {last}) i"
        ))


async def _explain(conn: AsyncConnection, statement: Any, values: dict[str, Any]) -> tuple[int, str]:
    """Buffers the statement touched (EXPLAIN ANALYZE) and its plan as JSON text."""
    compiled = statement.compile(dialect=conn.dialect)
    params = compiled.construct_params(values)
    ordered = tuple(params[name] for name in compiled.positiontup)
    result = await conn.exec_driver_sql(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + str(compiled), ordered
    )
    plan = result.scalar()
    document = plan if isinstance(plan, list) else json.loads(plan)
    top = document[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0)), json.dumps(document)


async def test_a_device_s_look_ups_read_its_queue_rows_under_stale_statistics(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's statistics")
    # What the statistics saw: a few devices, their commands all finished, nothing queued.
    async with db.engine.begin() as conn:
        await _devices(conn, 1, FEW)
        await _commands(conn, 1, FEW, "completed", "NULL", queued=False)
    async with db.engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("ANALYZE devices, ios_devices, commands, command_queue")
    async with db.engine.connect() as conn:
        async with conn.begin() as tx:
            await _devices(conn, FEW + 1, FEW + QUEUED)
            await _commands(conn, FEW + 1, FEW + QUEUED, "processing", "7", queued=True)
            device = FEW + QUEUED // 2
            now = datetime.now(UTC)
            looked_up = {
                "delivery's next command": (store_delivery_direct._NEXT[False].statement,
                                            {"b_device": device, "b_now": now}),
                "delivery's next ready command": (store_delivery_direct._NEXT[True].statement,
                                                  {"b_device": device, "b_now": now}),
                "Idle poll's first look": (ios_store.NEXT_ANY, {"device_id": device}),
                "later in an exchange": (ios_store.NEXT_READY, {"device_id": device, "now": now}),
                "claim's next id": (store_commands._next_id(True), {"b_device": device, "b_now": now}),
                "cold poll's probe": (store_binding_probe.BINDING_PROBE_STMT, {"fp": _fingerprint(device)}),
                "EAS executor's due commands": (
                    store_due._DUE, {"b_protocol": int(Protocol.EAS), "b_now": now, "b_limit": 50}),
            }
            for name, (statement, values) in looked_up.items():
                buffers, plan = await _explain(conn, statement, values)
                assert "ix_commands_bulk_status" not in plan, (name, plan)
                assert buffers < 100, (name, buffers, plan)  # a walk of the queue: thousands
            await tx.rollback()
