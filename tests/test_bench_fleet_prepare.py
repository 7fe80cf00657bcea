"""``mdm bench fleet``'s preparation: N devices written through the service's tables, each bound
to its own certificate from the server's CA, as a real Authenticate + TokenUpdate leave them; a
re-run changes nothing, a larger N resumes, a smaller one is refused; the devices it drives are
accepted by the real server."""

from __future__ import annotations

import hashlib

import pytest
from conftest import listener_url
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select, text

from mdm.bench import fleet_prepare
from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device, Event, Group
from mdm.ios.tables import IosDevice
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server
from mdm.sim.fleet import Fleet

TOPIC = "com.apple.mgmt.External.bench-fleet-test"


async def _count(db: Database, table: type) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_n_devices_each_bound_to_its_own_certificate_from_the_ca(config: Config, db: Database) -> None:
    done: list[int] = []
    result = await fleet_prepare.prepare(config, 120, topic=TOPIC, key_type="ec", batch=50,
                                         progress=done.append)
    assert (result.devices, result.added) == (120, 120)
    assert done == [50, 100, 120]
    issuing = x509.load_pem_x509_certificate((config.ca_dir / "issuing.pem").read_bytes())
    async with db.session() as session:
        rows = (await session.execute(
            select(Device, IosDevice, IssuedCertificateRecord)
            .join(IosDevice, IosDevice.device_id == Device.id)
            .join(IssuedCertificateRecord, IssuedCertificateRecord.serial == Device.cert_serial)
            .order_by(Device.identifier)
        )).all()
        group = await session.scalar(select(Group).where(Group.name == fleet_prepare.GROUP))
    assert len(rows) == 120
    assert group is not None
    serials, fingerprints = set(), set()
    for index, (device, ios, record) in enumerate(rows):
        cert = x509.load_pem_x509_certificate(record.pem.encode())
        cert.verify_directly_issued_by(issuing)
        assert issuing.issuer == x509.load_pem_x509_certificate(
            (config.ca_dir / "root.pem").read_bytes()).subject
        assert ios.cert_fingerprint == hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
        assert record.device_id == device.id and record.status == "valid" and record.type == "mobile"
        assert format(cert.serial_number, "x") == device.cert_serial
        assert device.identifier == fleet_prepare.udid(index)
        assert device.protocol == 1 and device.status == "ok" and device.push_valid
        assert device.push_token == fleet_prepare.push_token(device.identifier)
        assert device.attributes["topic"] == TOPIC and ios.topic == TOPIC
        assert device.serial_number and device.model and device.os_version and device.os_name
        assert device.group_id == (group.id if index % fleet_prepare.GROUP_EVERY == 0 else None)
        serials.add(device.cert_serial)
        fingerprints.add(ios.cert_fingerprint)
    assert len(serials) == len(fingerprints) == 120
    assert await _count(db, Event) == 0  # no enrollment events for the synthetic fleet


async def test_a_rerun_changes_nothing_a_larger_fleet_resumes_a_smaller_is_refused(
    config: Config, db: Database
) -> None:
    await fleet_prepare.prepare(config, 40, topic=TOPIC, key_type="ec", batch=25)
    again = await fleet_prepare.prepare(config, 40, topic=TOPIC, batch=25)
    assert again.added == 0
    assert await _count(db, Device) == await _count(db, IosDevice) == 40
    grown = await fleet_prepare.prepare(config, 70, topic=TOPIC, batch=25)
    assert grown.added == 30
    assert await _count(db, Device) == await _count(db, IssuedCertificateRecord) == 70
    async with db.session() as session:
        ids = list(await session.scalars(select(Device.identifier).order_by(Device.identifier)))
    assert ids == [fleet_prepare.udid(i) for i in range(70)]
    with pytest.raises(fleet_prepare.FleetPrepareError, match="70 devices"):
        await fleet_prepare.prepare(config, 10, topic=TOPIC)


async def test_prepared_devices_are_accepted_by_the_server(
    config: Config, server: Server, db: Database
) -> None:
    await fleet_prepare.prepare(config, 30, topic=TOPIC, key_type="ec")
    members = await fleet_prepare.driven_members(config, 5)
    assert [m.udid for m in members] == [fleet_prepare.udid(i) for i in range(5)]
    roots = [x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())]
    base = listener_url(server, "ios")
    async with Fleet(members, server_url=f"{base}/mdm/server", checkin_url=f"{base}/mdm/checkin",
                     topic=TOPIC, trusted_roots=roots, concurrency=2) as fleet:
        warm = await fleet.warm_up()
        assert warm.errors == {} and warm.count == 5
        await fleet.check_in(members[0])  # a re-authentication of the bound identity
    async with db.session() as session:
        device = await session.get(Device, members[0].device_id)
    assert device is not None and device.push_token == fleet_prepare.push_token(members[0].udid)


async def _vacuum_counts(db: Database, tables: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT relname, vacuum_count, analyze_count FROM pg_stat_user_tables "
                 "WHERE relname = ANY(:names)"), {"names": list(tables)})
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}


async def test_a_run_on_postgresql_starts_from_vacuumed_tables(config: Config, db: Database) -> None:
    """``mdm bench fleet`` VACUUMs (ANALYZE) the tables a run writes before it starts: this
    machine's PostgreSQL has no autovacuum, and each run on a reused fleet left dead rows."""
    await fleet_prepare.prepare(config, 3, topic=TOPIC, key_type="ec", batch=3)
    tables = ("commands", "devices")
    if db.is_sqlite:
        assert await fleet_prepare.vacuum(config, tables) is None
        return
    before = await _vacuum_counts(db, tables)
    checkpoints = await _checkpoints_requested(db)
    vacuumed = await fleet_prepare.vacuum(config, tables)
    after = await _vacuum_counts(db, tables)
    assert {t: (after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in tables} == {
        t: (1, 1) for t in tables
    }
    # And a checkpoint (the tests' role is a superuser): nothing left dirty for the run to write.
    assert vacuumed is not None and vacuumed[1] is True
    assert await _checkpoints_requested(db) > checkpoints


async def _checkpoints_requested(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(text("SELECT checkpoints_req FROM pg_stat_bgwriter")) or 0)
