"""iOS identity renewal through an enterprise source: the renewal request names the device's user
(an AD CS source requests on behalf of ``DOMAIN\\user``, and AD CS refuses a device name), carries
the PKCS#10 of the new key, and the new identity comes from the enterprise CA."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from enroll_support import APNS_TOML
from pki_pending_support import NAME, SwitchableSource, papi, pending_server, source  # noqa: F401
from sqlalchemy import select
from write_holds import record_holds

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Command
from mdm.pki import renewal
from mdm.pki.issuance import serial_hex
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server
from mdm.sim.device import SimulatedDevice
from mdm.sim.facts import HardwareFacts


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


async def enrolled_on_the_enterprise_rule(
    api: httpx.AsyncClient, config: Config, db: Database
) -> tuple[SimulatedDevice, str, datetime]:
    """An iOS device enrolled for carol, and the mobile rule switched to the enterprise source:
    its serial and the time just before its renewal is due."""
    created = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "carol"})
    assert created.status_code == 201, created.text
    roots = x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())
    device = SimulatedDevice(HardwareFacts.generate(random.Random(31)), mode="signature", trusted_roots=roots)
    await device.enroll(created.json()["url"])
    await device.check_in()
    assert device.identity is not None
    old_serial = serial_hex(device.identity.certificate.serial_number)
    rule = {"source": NAME, "template": "MdmUser"}
    changed = await api.put("/api/v1/certificates/rules/mobile", json=rule)
    assert changed.status_code == 200, changed.text
    async with db.session() as session:
        old = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == old_serial)
        )
    assert old is not None
    not_after = old.not_after if old.not_after.tzinfo else old.not_after.replace(tzinfo=UTC)
    return device, old_serial, not_after - timedelta(days=1)


async def renewals_of(db: Database, old_serial: str) -> tuple[list[IssuedCertificateRecord], list[Command]]:
    async with db.session() as session:
        records = (await session.scalars(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.renews_serial == old_serial)
        )).all()
        queued = (await session.scalars(select(Command).where(Command.type == "InstallConfProf"))).all()
    return list(records), list(queued)


async def test_renewal_from_the_enterprise_ca_names_the_user(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource,  # noqa: F811
    config: Config, db: Database,
) -> None:
    _, old_serial, due = await enrolled_on_the_enterprise_rule(papi, config, db)
    report = await renewal.renewal_pass(pending_server.ctx, now=due)
    assert (report.requested, report.failed) == (1, 0), report

    (request,) = source.signed
    assert request.uid == "carol" and request.template == "MdmUser"
    assert request.csr is not None and request.csr.is_signature_valid
    (new,), (command,) = await renewals_of(db, old_serial)
    assert new.source == NAME and command.created_by == "renewal"


async def test_a_slow_enterprise_ca_does_not_hold_the_write_transaction(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource,  # noqa: F811
    config: Config, db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CA's answer takes 0.6 s: on SQLite no write transaction of the renewal holds the
    server's one writer while it waits (they held it for the whole request before)."""
    _, old_serial, due = await enrolled_on_the_enterprise_rule(papi, config, db)
    source.latency = 0.6
    held = record_holds(monkeypatch)
    report = await renewal.renewal_pass(pending_server.ctx, now=due)
    assert (report.requested, report.failed) == (1, 0), report
    (new,), (command,) = await renewals_of(db, old_serial)
    assert new.source == NAME and command.created_by == "renewal"
    if db.is_sqlite:
        assert held and max(held) < 0.3, held


async def test_a_certificate_revoked_while_the_ca_signs_is_not_renewed(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource,  # noqa: F811
    config: Config, db: Database,
) -> None:
    """The second transaction finds the certificate revoked: nothing is recorded or queued, the
    new key never leaves the server, and the pass says the device was not renewable."""
    _, old_serial, due = await enrolled_on_the_enterprise_rule(papi, config, db)
    source.latency = 0.5
    renewing = asyncio.ensure_future(renewal.renewal_pass(pending_server.ctx, now=due))
    for _ in range(100):
        if source.entered:
            break
        await asyncio.sleep(0.02)
    assert source.entered, "the renewal never asked the CA"
    revoked = await papi.post(f"/api/v1/certificates/{old_serial}/revoke", json={"reason": "key_compromise"})
    assert revoked.status_code == 200, revoked.text
    report = await renewing
    assert (report.requested, report.unrenewable, report.failed) == (0, 1, 0), report
    assert await renewals_of(db, old_serial) == ([], [])
