"""A device that checks in with the identity from its enrollment profile is tied to that enrollment:
its owner is the enrolled user, and `Remove` targets the MDM profile the enrollment installed."""

from __future__ import annotations

import random

import httpx
import pytest
from cryptography import x509
from enroll_support import APNS_TOML
from sqlalchemy import select

from mdm.config import Config
from mdm.enroll.tables import Enrollment
from mdm.sim.device import SimulatedDevice
from mdm.sim.facts import HardwareFacts


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


async def test_authenticate_attaches_the_enrollment(api: httpx.AsyncClient, config: Config, db) -> None:
    created = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "carol"})
    assert created.status_code == 201, created.text
    roots = x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())
    device = SimulatedDevice(HardwareFacts.generate(random.Random(7)), mode="signature", trusted_roots=roots)
    await device.enroll(created.json()["url"])
    await device.check_in()

    async with db.session() as session:
        enrollment = await session.scalar(select(Enrollment).where(Enrollment.id == created.json()["id"]))
    assert enrollment is not None and enrollment.device_id is not None
    detail = (await api.get(f"/api/v1/devices/{enrollment.device_id}")).json()
    assert detail["identifier"] == device.udid
    assert detail["user"] == "carol"
    assert detail["attributes"]["mdm_profile_identifier"] == enrollment.mdm_profile_identifier

    sent = await api.post(f"/api/v1/devices/{enrollment.device_id}/commands", json={"type": "Remove"})
    assert sent.status_code == 201, sent.text
    await device.poll()
    command = (await api.get(f"/api/v1/commands/{sent.json()['guid']}")).json()
    assert command["status"] == "completed", command
    assert (await api.get(f"/api/v1/devices/{enrollment.device_id}")).json()["status"] == "unmanaged"
