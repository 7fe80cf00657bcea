"""The device list's page queries read an index in id order for each single filter: no sort of
every matching device per page (at 10^6 devices a sort of one platform's devices is seconds).
SQLite's own plan of the statement ``store_devices.device_page`` sends (PostgreSQL plans by
statistics: measured by ``mdm bench fleet`` instead)."""

from __future__ import annotations

from typing import Any

import pytest
from sql_capture import selects

from mdm.core import store_devices
from mdm.db.engine import Database


@pytest.mark.parametrize(
    "filters",
    # A group with subgroups is several index ranges: its devices are sorted (a group tree's,
    # not the fleet's).
    [{}, {"protocol": 1}, {"status": "ok"}, {"protocol": 1, "status": "ok"}, {"group_ids": [1]}],
)
async def test_a_page_is_an_index_range_in_id_order(db: Database, filters: dict[str, Any]) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's query plan")
    with selects(db) as seen:
        async with db.session() as session:
            await store_devices.device_page(session, limit=101, after_id=5, **filters)
    [(statement, parameters)] = seen
    async with db.engine.connect() as conn:
        rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = " | ".join(str(r[-1]) for r in rows)
    assert "TEMP B-TREE" not in plan, plan
    assert "SEARCH devices USING" in plan, plan
