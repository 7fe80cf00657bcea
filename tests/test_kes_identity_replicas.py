"""A KES device's binding ends at once, with a long binding cache: deleted or unenrolled on this
replica or another one (PostgreSQL NOTIFY); and the renewal flag goes from the Renewer through the
sync to the agent's renewal and back."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device
from mdm.kes.plugin import IDENTITY
from mdm.kes.renewal import KesRenewer
from mdm.kes.tables import KesDevice
from mdm.pki.tables import IssuedCertificateRecord
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, open_context
from tests.conftest import PG_URL, listener_url
from tests.kes_support import (
    EnrolledDevice,
    android_enrollment,
    enroll_device,
    error_code,
    kes_client,
    kes_ssl_context,
    make_csr,
    new_key,
    request_id,
)


@pytest.fixture
def extra_config() -> str:
    return "[kes]\nbinding_cache_seconds = 300\nmin_sync_spacing_seconds = 0\n"


async def _sync(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/kes/v1/sync", json={"v": 1, "request_id": request_id()})


async def _dropped_on(replica: Server, device_id: int) -> None:
    """Wait (at most 2 s, far below the 300 s TTL) until the replica heard the NOTIFY."""
    bindings = replica.ctx.services[IDENTITY].bindings
    for _ in range(200):
        if not bindings.holds(device_id):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"replica still caches the binding of device {device_id}")


async def test_a_deleted_device_is_refused_at_its_next_request(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    device = await enroll_device(server, config, db)
    async with kes_client(server, config, device) as client:
        assert (await _sync(client)).status_code == 200
        assert server.ctx.services[IDENTITY].bindings.holds(device.device_id)
        assert (await api.delete(f"/api/v1/devices/{device.device_id}")).status_code == 204
        refused = await _sync(client)
    assert (refused.status_code, error_code(refused)) == (403, "certificate_not_bound")


async def test_the_renewal_flag_reaches_the_agent_and_the_renewal_clears_it(
    server: Server, config: Config, db: Database
) -> None:
    device = await enroll_device(server, config, db)
    async with db.transaction() as session:
        row = await session.get(Device, device.device_id)
        record = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == device.serial_hex)
        )
        assert row is not None and record is not None
        step = await KesRenewer().prepare_renewal(row, record)
        await step(session, row, record)
    async with kes_client(server, config, device) as client:
        asked = await _sync(client)
        assert asked.status_code == 200 and asked.json()["renew_certificate"] is True
        renewed = await client.post(
            "/kes/v1/certificate", json={"v": 1, "request_id": request_id(), "csr": make_csr(new_key())}
        )
        assert renewed.status_code == 200, renewed.text
        assert (await _sync(client)).status_code == 200  # the previous certificate still works meanwhile
    async with db.session() as session:
        kes = await session.get(KesDevice, device.device_id)
    # Cleared in the database by the renewal. (The sync's 30 s state cache still answers true on this
    # replica until it expires: the sync part is to drop it when renew_requested_at changes.)
    assert kes is not None and kes.renew_requested_at is None


@pytest.mark.skipif(not PG_URL, reason="replicas share a PostgreSQL database; SQLite is one process")
async def test_an_ended_binding_on_one_replica_cuts_the_device_off_on_the_other(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    replica = Server(await open_context(config), PLUGINS)
    await replica.start()
    try:
        deleted, left = [
            await enroll_device(server, config, db, enrollment=await android_enrollment(db)) for _ in range(2)
        ]

        async def on_b(device: EnrolledDevice) -> httpx.Response:
            async with httpx.AsyncClient(
                base_url=listener_url(replica, "kes"), verify=kes_ssl_context(config, device), timeout=30
            ) as client:
                return await _sync(client)

        for device in (deleted, left):
            assert (await on_b(device)).status_code == 200
            assert replica.ctx.services[IDENTITY].bindings.holds(device.device_id)
        assert (await api.delete(f"/api/v1/devices/{deleted.device_id}")).status_code == 204
        await _dropped_on(replica, deleted.device_id)
        refused = await on_b(deleted)
        assert (refused.status_code, error_code(refused)) == (403, "certificate_not_bound")

        async with kes_client(server, config, left) as on_a:
            assert (
                await on_a.post("/kes/v1/unenroll", json={"v": 1, "request_id": request_id()})
            ).status_code == 200
        await _dropped_on(replica, left.device_id)
        refused = await on_b(left)
        assert (refused.status_code, error_code(refused)) == (403, "device_not_managed")
    finally:
        await replica.stop()
