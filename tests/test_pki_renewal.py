"""Automatic renewal: the worker finds device certificates inside their renewal window, emits
cert_expiring once, asks the protocol's registered renewer, marks expired certificates; a real
renewer (registered here, in ctx.services[RENEWERS]) issues the replacement through
issuance.issue(renews_serial=...)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.events import EventBody, EventType
from mdm.db.engine import Database
from mdm.db.models import Device, Event, Protocol, Severity, User
from mdm.pki import renewal, store_renewal
from mdm.pki import services as plugin
from mdm.pki.issuance import CertificateRequest, CertificateSource, issue
from mdm.pki.renewers import RenewalStep, Renewer, Renewers
from mdm.pki.tables import CertType, IssuedCertificateRecord
from mdm.server.runtime import Server

HALF_DONE = EventType("half_done", Severity.INFO, EventBody, "test: emitted by a renewer that then fails")


class ReissuingRenewer:
    """What a protocol does when the device answers at once: a new certificate for the same
    device, renewing the old one."""

    def __init__(self, source: CertificateSource) -> None:
        self.source = source
        self.asked: list[str] = []

    async def prepare_renewal(self, device: Device, certificate: IssuedCertificateRecord) -> RenewalStep:
        return self.request_renewal

    async def request_renewal(
        self, session: AsyncSession, device: Device, certificate: IssuedCertificateRecord
    ) -> str:
        self.asked.append(certificate.serial)
        new = await issue(
            session,
            self.source,
            CertificateRequest(
                type=CertType(certificate.type),
                common_name=device.identifier,
                device_id=device.id,
                user_id=certificate.user_id,
                renews_serial=certificate.serial,
            ),
        )
        device.cert_serial, device.cert_not_after = new.serial_hex, new.certificate.not_valid_after_utc
        return f"reissued as {new.serial_hex}"


class Unavailable:
    async def prepare_renewal(self, device, certificate) -> RenewalStep:
        raise renewal.RenewalUnavailable("no push token")


class Broken:
    async def prepare_renewal(self, device, certificate) -> RenewalStep:
        return self.request_renewal

    async def request_renewal(self, session, device, certificate) -> str:
        events.emit(session, HALF_DONE)  # must be rolled back with the failure
        raise RuntimeError("renewer bug")


@pytest.fixture
def renewers(server: Server) -> Renewers:
    """The server's renewers (created by the PKI plugin), where platforms register."""
    return plugin.renewers(server.ctx)


def register(renewers: Renewers, protocol: Protocol, renewer: Renewer) -> None:
    renewers.register(protocol, renewer)


def reissuing(server: Server) -> ReissuingRenewer:
    return ReissuingRenewer(plugin.source(server.ctx))


async def device_with_cert(
    server: Server, protocol: Protocol, days: int, identifier: str = "dev-1"
) -> tuple[int, str]:
    async with server.ctx.db.transaction() as session:
        user = User(name=f"owner-{identifier}")
        session.add(user)
        await session.flush()
        device = Device(
            protocol=protocol.value, identifier=identifier, user_id=user.id, inventory={}, attributes={}
        )
        session.add(device)
        await session.flush()
        ident = await issue(
            session,
            plugin.source(server.ctx),
            CertificateRequest(
                type=CertType.MOBILE,
                common_name=identifier,
                days=days,
                device_id=device.id,
                user_id=user.id,
            ),
        )
        device.cert_serial = ident.serial_hex
        return device.id, ident.serial_hex


async def record(db, serial: str) -> IssuedCertificateRecord:
    async with db.session() as session:
        row = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == serial)
        )
    assert row is not None
    return row


async def event_types(db) -> list[tuple[str, dict]]:
    async with db.session() as session:
        rows = (
            await session.scalars(select(Event).where(Event.type.like("cert_%")).order_by(Event.id))
        ).all()
    return [(e.type, e.body) for e in rows if e.type != "cert_issued"]


async def test_device_certificate_in_window_is_renewed(server: Server, db, renewers) -> None:
    renewer = reissuing(server)
    register(renewers, Protocol.KES, renewer)
    device_id, old = await device_with_cert(server, Protocol.KES, days=10)
    _, fresh = await device_with_cert(server, Protocol.KES, days=200, identifier="dev-2")

    report = await renewal.renewal_pass(server.ctx)
    assert (report.expiring, report.requested, report.failed) == (1, 1, 0)
    assert renewer.asked == [old]
    old_row = await record(db, old)
    assert old_row.status == "superseded" and old_row.renewal_requested_at is not None
    async with db.session() as session:
        new_row = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.renews_serial == old)
        )
        device = await session.get(Device, device_id)
    assert new_row is not None and new_row.status == "valid" and new_row.device_id == device_id
    assert device is not None and device.cert_serial == new_row.serial
    assert (await record(db, fresh)).status == "valid"
    seen = await event_types(db)
    assert [t for t, _ in seen] == ["cert_expiring", "cert_renewed", "cert_renewal_requested"]
    assert seen[0][1]["serial"] == old and seen[0][1]["days_left"] in (9, 10)
    assert seen[1][1]["renews_serial"] == old and seen[1][1]["serial"] == new_row.serial
    assert seen[2][1]["note"] == f"reissued as {new_row.serial}"

    # nothing left to do: the replacement is far from its window
    again = await renewal.renewal_pass(server.ctx)
    assert (again.expiring, again.requested) == (0, 0) and renewer.asked == [old]


async def test_without_a_renewer_only_the_notice_goes_out(server: Server, db, renewers) -> None:
    _, serial = await device_with_cert(server, Protocol.IOS, days=5)
    report = await renewal.renewal_pass(server.ctx)
    assert (report.expiring, report.requested, report.unrenewable) == (1, 0, 1)
    report = await renewal.renewal_pass(server.ctx)
    assert (report.expiring, report.unrenewable) == (0, 0)  # not nagged again before the retry time
    assert [t for t, _ in await event_types(db)] == ["cert_expiring"]
    # once a renewer exists, the next retry asks it
    register(renewers, Protocol.IOS, reissuing(server))
    later = datetime.now(UTC) + timedelta(hours=server.ctx.config.pki.renewal_retry_hours, minutes=1)
    report = await renewal.renewal_pass(server.ctx, now=later)
    assert report.requested == 1
    assert (await record(db, serial)).status == "superseded"


async def test_unavailable_and_failing_renewers(server: Server, db, renewers) -> None:
    register(renewers, Protocol.KES, Unavailable())
    register(renewers, Protocol.IOS, Broken())
    _, kes = await device_with_cert(server, Protocol.KES, days=5, identifier="kes-1")
    _, ios = await device_with_cert(server, Protocol.IOS, days=5, identifier="ios-1")
    report = await renewal.renewal_pass(server.ctx)
    assert (report.expiring, report.unrenewable, report.failed, report.requested) == (2, 1, 1, 0)
    for serial in (kes, ios):
        row = await record(db, serial)
        assert (
            row.status == "valid"
            and row.expiring_notified_at is not None
            and row.renewal_requested_at is not None
        )
    async with db.session() as session:
        assert (await session.scalar(select(Event).where(Event.type == "half_done"))) is None
    assert sorted(b["serial"] for t, b in await event_types(db) if t == "cert_expiring") == sorted([kes, ios])


async def test_expired_certificates_are_marked(server: Server, db) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for serial, status in (("aa01", "valid"), ("aa02", "superseded"), ("aa03", "revoked")):
            session.add(
                IssuedCertificateRecord(
                    serial=serial,
                    type="mobile",
                    subject="CN=x",
                    source="internal",
                    status=status,
                    not_before=now - timedelta(days=30),
                    not_after=now - timedelta(minutes=1),
                    pem="-",
                )
            )
    user_cert_days = 3
    async with db.transaction() as session:
        ident = await issue(
            session,
            plugin.source(server.ctx),
            CertificateRequest(type=CertType.VPN, common_name="carol", days=user_cert_days),
        )
    report = await renewal.renewal_pass(server.ctx)
    assert report.expired == 2 and report.expiring == 1
    assert [(await record(db, s)).status for s in ("aa01", "aa02", "aa03")] == [
        "expired",
        "expired",
        "revoked",
    ]
    seen = await event_types(db)
    assert [(t, b["serial"]) for t, b in seen] == [
        ("cert_expired", "aa01"),
        ("cert_expiring", ident.serial_hex),
    ]


@pytest.mark.parametrize("extra_config", ["[pki]\nrenewal_check_seconds = 0.5\n"])
async def test_the_worker_renews_by_itself(server: Server, db, renewers) -> None:
    register(renewers, Protocol.KES, reissuing(server))
    _, serial = await device_with_cert(server, Protocol.KES, days=3)
    for _ in range(100):
        if (await record(db, serial)).status == "superseded":
            break
        await asyncio.sleep(0.1)
    assert (await record(db, serial)).status == "superseded"


async def _stop_the_renewal_worker(server: Server) -> None:
    """The server's renewal worker runs a pass at start; on a loaded machine that pass can come
    after a test's records were written and expire them before the test's own pass."""
    for task in server.worker_tasks:
        if task.get_name() == "worker:pki.renewal":
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _expired_record(db, serial: str) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        session.add(IssuedCertificateRecord(
            serial=serial, type="mobile", subject="CN=x", source="internal", status="valid",
            not_before=now - timedelta(days=30), not_after=now - timedelta(minutes=1), pem="-",
        ))


async def test_an_expiry_read_outside_the_write_is_checked_again_in_it(
    server: Server, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads what expired outside its write transactions (they held SQLite's one
    writer); a certificate changed between the read and the write is left as it now is."""
    await _stop_the_renewal_worker(server)  # (its own pass could expire them first)
    for serial in ("bb01", "bb02"):
        await _expired_record(db, serial)
    read = store_renewal.expired_ids

    async def read_then_revoked(session: AsyncSession, now: datetime, limit: int) -> list[int]:
        ids = await read(session, now, limit)
        async with db.transaction() as other:  # meanwhile an administrator revokes bb02
            await other.execute(
                update(IssuedCertificateRecord)
                .where(IssuedCertificateRecord.serial == "bb02")
                .values(status="revoked")
            )
        return ids

    monkeypatch.setattr(store_renewal, "expired_ids", read_then_revoked)
    report = await renewal.renewal_pass(server.ctx)
    assert report.expired == 1
    assert [(await record(db, s)).status for s in ("bb01", "bb02")] == ["expired", "revoked"]
    assert [(t, b["serial"]) for t, b in await event_types(db)] == [("cert_expired", "bb01")]


async def test_a_sweep_with_nothing_due_opens_no_write_transaction(
    server: Server, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    await device_with_cert(server, Protocol.KES, days=300)  # far from its renewal window
    mine: list[bool] = []
    transaction = Database.transaction
    me = asyncio.current_task()

    def counted(self: Database, **kwargs: bool) -> Any:
        if asyncio.current_task() is me:
            mine.append(True)
        return transaction(self, **kwargs)

    monkeypatch.setattr(Database, "transaction", counted)
    report = await renewal.renewal_pass(server.ctx)
    assert (report.expired, report.expiring, report.requested) == (0, 0, 0)
    assert mine == []
