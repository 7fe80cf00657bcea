"""iOS identity renewal end to end: the renewal worker re-installs the enrolled device's MDM profile
(same PayloadIdentifier, new PKCS#12 identity) over InstallProfile; the simulator replaces the
profile in place and continues with the new certificate, which takes over the device's binding."""

from __future__ import annotations

import plistlib
import random
from datetime import UTC, timedelta

import httpx
import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from enroll_support import APNS_TOML
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Command, Device, Event
from mdm.ios.command_codec import to_plist_dict
from mdm.ios.command_steps import steps_of
from mdm.pki import renewal
from mdm.pki.issuance import serial_hex
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server
from mdm.sim.device import SimulatedDevice
from mdm.sim.facts import HardwareFacts


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


async def _enrolled(api: httpx.AsyncClient, config: Config, seed: int) -> tuple[SimulatedDevice, int]:
    created = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": f"user{seed}"})
    assert created.status_code == 201, created.text
    roots = x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())
    facts = HardwareFacts.generate(random.Random(seed))
    device = SimulatedDevice(facts, mode="signature", trusted_roots=roots)
    await device.enroll(created.json()["url"])
    await device.check_in()
    listed = (await api.get("/api/v1/devices")).json()
    items = listed["items"] if isinstance(listed, dict) else listed
    device_id = next(d["id"] for d in items if d["identifier"] == device.udid)
    return device, device_id


async def _record(db: Database, serial: str) -> IssuedCertificateRecord:
    async with db.session() as session:
        row = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == serial)
        )
    assert row is not None
    return row


def _profile_of(command: Command) -> dict:
    (step,) = steps_of(command.payload)
    assert step["RequestType"] == "InstallProfile"
    signed = to_plist_dict(step)["Payload"]
    inner = cms.ContentInfo.load(signed)["content"]["encap_content_info"]["content"].native
    return plistlib.loads(inner)


async def test_renewal_reinstalls_the_mdm_profile_with_a_new_identity(
    server: Server, api: httpx.AsyncClient, config: Config, db: Database
) -> None:
    device, device_id = await _enrolled(api, config, 11)
    assert device.identity is not None
    old_serial = serial_hex(device.identity.certificate.serial_number)
    old = await _record(db, old_serial)
    async with db.session() as session:
        row = await session.get(Device, device_id)
        assert row is not None
        profile_id = row.attributes["mdm_profile_identifier"]

    # The worker's pass, as it runs a day before the certificate expires.
    not_after = old.not_after if old.not_after.tzinfo else old.not_after.replace(tzinfo=UTC)
    report = await renewal.renewal_pass(server.ctx, now=not_after - timedelta(days=1))
    assert (report.requested, report.failed) == (1, 0), report

    async with db.session() as session:
        command = await session.scalar(
            select(Command).where(Command.device_id == device_id, Command.type == "InstallConfProf")
        )
        assert command is not None and command.created_by == "renewal" and command.active
        new_row = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.renews_serial == old_serial)
        )
    assert new_row is not None and new_row.device_id == device_id and new_row.status == "valid"
    assert (await _record(db, old_serial)).status == "superseded"

    profile = _profile_of(command)
    assert profile["PayloadIdentifier"] == profile_id
    kinds = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    assert kinds["com.apple.mdm"]["Topic"] == device.enrollment.topic  # type: ignore[union-attr]
    p12 = kinds["com.apple.security.pkcs12"]
    _, cert, _ = pkcs12.load_key_and_certificates(p12["PayloadContent"], p12["Password"].encode())
    assert cert is not None and serial_hex(cert.serial_number) == new_row.serial != old_serial

    # A second pass does not queue another profile while this one is pending.
    again = await renewal.renewal_pass(server.ctx, now=not_after - timedelta(days=1))
    assert again.requested == 0

    # The device installs it and from then on speaks with the new identity.
    result = await device.poll()
    assert ("InstallProfile", "Acknowledged") in result.statuses, result.statuses
    assert serial_hex(device.identity.certificate.serial_number) == new_row.serial
    await device.poll()
    await device.authenticate()  # a check-in with the new certificate is accepted as well
    async with db.session() as session:
        row = await session.get(Device, device_id)
        assert row is not None and row.cert_serial == new_row.serial and row.status == "ok"
        types = [
            e.type for e in (await session.scalars(select(Event).where(Event.device_id == device_id))).all()
        ]
        done = await session.get(Command, command.id)
    assert done is not None and done.status == "completed"
    assert {"cert_renewed", "cert_renewal_requested", "device_identity_renewed"} <= set(types), types

    # The server keeps commanding the device over the new identity.
    sent = await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": "RefreshDeviceInfo"})
    assert sent.status_code == 201, sent.text
    await device.poll()
    assert (await api.get(f"/api/v1/commands/{sent.json()['guid']}")).json()["status"] == "completed"


async def test_a_device_without_a_profile_identifier_is_not_renewable(
    server: Server, api: httpx.AsyncClient, config: Config, db: Database
) -> None:
    device, device_id = await _enrolled(api, config, 12)
    async with db.transaction() as session:
        row = await session.get(Device, device_id)
        assert row is not None
        row.attributes = {k: v for k, v in row.attributes.items() if k != "mdm_profile_identifier"}
    assert device.identity is not None
    old = await _record(db, serial_hex(device.identity.certificate.serial_number))
    not_after = old.not_after if old.not_after.tzinfo else old.not_after.replace(tzinfo=UTC)
    report = await renewal.renewal_pass(server.ctx, now=not_after - timedelta(days=1))
    assert (report.requested, report.unrenewable, report.failed) == (0, 1, 0)
    assert (await _record(db, old.serial)).status == "valid"
    async with db.session() as session:
        assert await session.scalar(select(Command).where(Command.device_id == device_id)) is None

