"""iOS identity renewal through an enterprise source: the renewal request names the device's user
(an AD CS source requests on behalf of ``DOMAIN\\user``, and AD CS refuses a device name), carries
the PKCS#10 of the new key, and the new identity comes from the enterprise CA."""

from __future__ import annotations

import random
from datetime import UTC, timedelta

import httpx
import pytest
from cryptography import x509
from enroll_support import APNS_TOML
from pki_pending_support import NAME, SwitchableSource, papi, pending_server, source  # noqa: F401
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.pki import renewal
from mdm.pki.issuance import serial_hex
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server
from mdm.sim.device import SimulatedDevice
from mdm.sim.facts import HardwareFacts


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


async def test_renewal_from_the_enterprise_ca_names_the_user(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource,  # noqa: F811
    config: Config, db: Database,
) -> None:
    created = await papi.post("/api/v1/enrollments", json={"platform": "ios", "user": "carol"})
    assert created.status_code == 201, created.text
    roots = x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())
    device = SimulatedDevice(HardwareFacts.generate(random.Random(31)), mode="signature", trusted_roots=roots)
    await device.enroll(created.json()["url"])
    await device.check_in()
    assert device.identity is not None
    old_serial = serial_hex(device.identity.certificate.serial_number)
    rule = {"source": NAME, "template": "MdmUser"}
    changed = await papi.put("/api/v1/certificates/rules/mobile", json=rule)
    assert changed.status_code == 200, changed.text

    async with db.session() as session:
        old = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == old_serial)
        )
    assert old is not None
    not_after = old.not_after if old.not_after.tzinfo else old.not_after.replace(tzinfo=UTC)
    report = await renewal.renewal_pass(pending_server.ctx, now=not_after - timedelta(days=1))
    assert (report.requested, report.failed) == (1, 0), report

    (request,) = source.signed
    assert request.uid == "carol" and request.template == "MdmUser"
    assert request.csr is not None and request.csr.is_signature_valid
    async with db.session() as session:
        new = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.renews_serial == old_serial)
        )
    assert new is not None and new.source == NAME
