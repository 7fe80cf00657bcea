"""Helpers of the bulk-operation tests: follow an operation to its end, prepare devices fast."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from mdm.db.engine import Database
from mdm.db.models import Device, Protocol

DONE = ("queued", "recalled", "failed")


async def wait_bulk(api: httpx.AsyncClient, bulk_id: int, *, timeout: float = 60.0) -> dict[str, Any]:
    """GET /bulk/{id} until queuing (or a recall) has ended; the last answer."""
    async with asyncio.timeout(timeout):
        while True:
            r = await api.get(f"/api/v1/bulk/{bulk_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["state"] in DONE:
                return body
            await asyncio.sleep(0.05)


async def send_bulk(
    api: httpx.AsyncClient, devices: object, type_: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    r = await api.post("/api/v1/commands", json={"devices": devices, "type": type_, "args": args or {}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["href"] == f"/api/v1/bulk/{body['id']}" and body["state"] == "queuing"
    return await wait_bulk(api, body["id"])


async def add_devices(
    db: Database, n: int, protocol: Protocol = Protocol.IOS, *, prefix: str = "dev",
    group_id: int | None = None, os_name: str | None = "iOS",
) -> list[int]:
    """``n`` device rows by one multi-row INSERT; their ids."""
    async with db.transaction() as session:
        await session.execute(insert(Device), [
            {"protocol": protocol.value, "identifier": f"{prefix}-{i}", "group_id": group_id,
             "os_name": os_name, "inventory": {}, "attributes": {}, "status": "ok", "supported_commands": 0,
             "push_valid": False}
            for i in range(n)
        ])
        rows = await session.scalars(
            select(Device.id).where(Device.identifier.like(f"{prefix}-%"), Device.protocol == protocol.value)
            .order_by(Device.id)
        )
        return list(rows.all())


async def count(db: Database, stmt: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
