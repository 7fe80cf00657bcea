"""Authenticate of a device checking in again on PostgreSQL without a transaction block (issue 12,
check-in storms): the checked rows read without locks, then one statement that writes the
device, its binding and the event only if the device and binding rows are still as read. A
change that lands between the read and the write (push feedback, a newer check-in, a deletion, a
check-out, a re-enrollment under another identity) leaves the statement writing nothing, and the
transactional path decides again under the rows' locks: a binding never moves without the proof
that path asks for, nothing is lost, doubled or half-written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from binding_support import checkin_at, device_of, events_of
from checkin_direct_support import Transactions, change_after_read, counting
from ios_support import Phone
from sqlalchemy import delete, select, update

from mdm.core import events
from mdm.db.engine import Database
from mdm.db.models import Device, Event, User
from mdm.db.prepared import autocommit
from mdm.enroll.attach import normalized_serial
from mdm.ios import store_checkin_direct
from mdm.ios.event_types import DEVICE_REAUTHENTICATED
from mdm.ios.plugin import service
from mdm.ios.tables import IosDevice
from mdm.server.runtime import Server


@pytest.fixture
def extra_config() -> str:
    return "[ios]\nlast_seen_flush_seconds = 300\n"  # no write-behind transactions meanwhile


@pytest.fixture
def postgres(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("transaction blocks are PostgreSQL's round trips (SQLite runs inline)")


@pytest.fixture
def begun(server: Server) -> Iterator[Transactions]:
    with counting(server, "UPDATE ios_devices") as counted:
        yield counted


def _between(monkeypatch: pytest.MonkeyPatch, change: Callable[[], Awaitable[None]]) -> list[int]:
    return change_after_read(monkeypatch, store_checkin_direct, "checked_state", change)


async def _types(db: Database, device_id: int) -> list[str]:
    async with db.session() as session:
        query = select(Event.type).where(Event.device_id == device_id).order_by(Event.id)
        rows = await session.scalars(query)
        return list(rows.all())


async def test_a_returning_device_is_one_read_and_one_write_outside_a_transaction(
    postgres: None, server: Server, ios: httpx.AsyncClient, phone: Phone, db: Database, begun: Transactions
) -> None:
    device = await device_of(db, phone.udid)
    response = await phone.checkin(ios, phone.authenticate(OSVersion="18.1", DeviceName="Renamed"))
    assert response.status_code == 200, response.text
    assert begun.connections and begun.count() == 0  # no BEGIN/COMMIT around the write
    after = await device_of(db, phone.udid)
    assert (after.id, after.os_version, after.name, after.status) == (device.id, "18.1", "Renamed", "ok")
    assert (await _types(db, device.id))[-1] == "device_reauthenticated"
    fingerprint = (await _binding(db, device.id)).cert_fingerprint
    assert service(server.ctx).bindings.get(fingerprint) is not None  # cached for the TokenUpdate
    # The TokenUpdate that follows finds the binding as before.
    assert (await phone.checkin(ios, phone.token_update(token=b"\x04" * 32))).status_code == 200


async def test_a_returning_device_gives_the_same_rows_on_either_path(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    """(Both engines: SQLite runs the transactional path, PostgreSQL the single statement.)"""
    device = await device_of(db, phone.udid)
    before = await _binding(db, device.id)
    response = await phone.checkin(ios, phone.authenticate(OSVersion="18.2", IMEI="35 209900 176148 1"))
    assert response.status_code == 200, response.text
    after = await device_of(db, phone.udid)
    assert (after.os_version, after.imei, after.cert_serial) == ("18.2", "35 209900 176148 1", phone.serial)
    assert after.attributes["topic"] == before.topic
    binding = await _binding(db, device.id)
    assert binding.cert_fingerprint == before.cert_fingerprint
    assert binding.bound_at >= before.bound_at and binding.unlock_token == b"unlock-secret"
    reauthenticated = [e for e in await events_of(db, "device_reauthenticated") if e.device_id == device.id]
    assert len(reauthenticated) == 1
    assert reauthenticated[0].body["os_version"] == "18.2"
    assert reauthenticated[0].body["cert_serial"] == phone.serial


async def test_push_feedback_between_read_and_write_is_kept(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = await device_of(db, phone.udid)

    async def feedback() -> None:  # APNs said the token is no longer valid (not a checked column)
        async with db.transaction() as session:
            await session.execute(update(Device).where(Device.id == device.id).values(push_valid=False))

    reads = _between(monkeypatch, feedback)
    response = await phone.checkin(ios, phone.authenticate(OSVersion="18.3"))
    assert response.status_code == 200, response.text
    assert reads == [1]  # written by the single statement: not read again
    after = await device_of(db, phone.udid)
    assert (after.os_version, after.push_valid) == ("18.3", False)
    assert (await _types(db, device.id)).count("device_reauthenticated") == 1


async def test_a_newer_check_in_between_read_and_write_makes_this_one_a_replay(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    device = await device_of(db, phone.udid)

    async def newer() -> None:
        async with db.transaction() as session:
            await session.execute(
                update(IosDevice)
                .where(IosDevice.device_id == device.id)
                .values(last_signed_at=now + timedelta(seconds=10))
            )

    reads = _between(monkeypatch, newer)
    response = await checkin_at(ios, phone, phone.authenticate(OSVersion="18.4"), now + timedelta(seconds=1))
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "replayed"
    assert reads == [1]
    assert (await device_of(db, phone.udid)).os_version != "18.4"
    assert "device_reauthenticated" not in await _types(db, device.id)


async def test_a_deletion_between_read_and_write_writes_nothing_to_the_deleted_device(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = await device_of(db, phone.udid)

    async def deleted() -> None:
        async with db.transaction() as session:
            await session.execute(delete(Device).where(Device.id == device.id))

    reads = _between(monkeypatch, deleted)
    response = await phone.checkin(ios, phone.authenticate())
    # Decided again under the locks, as for an Authenticate after the deletion: the UDID has no
    # device, and the identity is still the deleted device's (its certificate record says so).
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["reason"] == "issued_to_other_device"
    assert reads == [1]
    async with db.session() as session:
        assert await session.scalar(select(Device.id).where(Device.identifier == phone.udid)) is None
    assert await _types(db, device.id) == ["device_enrolled", "push_token_updated"]  # (the outbox keeps them)


async def test_a_check_out_between_read_and_write_makes_this_an_enrollment(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = await device_of(db, phone.udid)
    checked_out = await phone.checkin(ios, {"MessageType": "CheckOut", "Topic": "t"})
    assert checked_out.status_code == 200
    # (now unbound: the read finds no binding and leaves the message to the transactional path)
    response = await phone.checkin(ios, phone.authenticate())
    assert response.status_code == 200, response.text
    assert (await device_of(db, phone.udid)).status == "ok"
    assert (await _types(db, device.id))[-2:] == ["device_status_changed", "device_enrolled"]

    async def removing() -> None:  # the device is being removed: its status is no longer ok
        async with db.transaction() as session:
            await session.execute(update(Device).where(Device.id == device.id).values(status="removing"))

    _between(monkeypatch, removing)
    response = await phone.checkin(ios, phone.authenticate())
    assert response.status_code == 200, response.text
    assert (await device_of(db, phone.udid)).status == "ok"
    assert (await _types(db, device.id))[-2:] == ["device_status_changed", "device_reauthenticated"]


async def test_a_re_enrollment_between_read_and_write_is_not_undone(
    postgres: None,
    server: Server,
    ios: httpx.AsyncClient,
    phone: Phone,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another identity took the UDID (committed by another replica) after the read: this
    identity's Authenticate is a takeover attempt now, refused without proof (the device has no
    owner, the certificate came from no enrollment); the binding stays with the other identity."""
    device = await device_of(db, phone.udid)
    other = b"\x5a" * 32

    async def re_enrolled() -> None:
        async with db.transaction() as session:
            await session.execute(
                update(IosDevice).where(IosDevice.device_id == device.id).values(cert_fingerprint=other)
            )

    _between(monkeypatch, re_enrolled)
    response = await phone.checkin(ios, phone.authenticate(DeviceName="taken back?"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["reason"] == "takeover"
    assert (await _binding(db, device.id)).cert_fingerprint == other
    assert (await device_of(db, phone.udid)).name != "taken back?"
    assert "device_reauthenticated" not in await _types(db, device.id)


async def test_the_guarded_write_changes_nothing_when_a_checked_column_moved(
    postgres: None, phone: Phone, db: Database
) -> None:
    """Each column Authenticate decides from guards the write on its own."""
    async with db.transaction() as session:
        user = User(name="guard-user")
        session.add(user)
        await session.flush()
        user_id = user.id
    device = await device_of(db, phone.udid)
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    moved: list[tuple[type[Device] | type[IosDevice], str, Any]] = [
        (Device, "status", "removing"), (Device, "user_id", user_id), (Device, "name", "n"),
        (Device, "model", "m"), (Device, "os_name", "o"), (Device, "os_version", "1"),
        (Device, "build_version", "b"), (Device, "serial_number", "s"), (Device, "imei", "i"),
        (Device, "phone_number", "p"), (Device, "cert_serial", "ff"), (Device, "cert_not_after", later),
        (Device, "enrolled_at", later), (Device, "attributes", {"topic": "moved"}),
        (IosDevice, "cert_fingerprint", b"\x6b" * 32), (IosDevice, "cert_not_before", later),
        (IosDevice, "last_signed_at", later), (Device, "identifier", phone.udid + "-moved"),
    ]  # fmt: skip
    identifier = phone.udid
    fingerprint = (await _binding(db, device.id)).cert_fingerprint
    serial = phone.serial
    for table, column, value in moved:
        read = await _read(db, fingerprint, serial, identifier)
        assert read.device is not None, column
        key = IosDevice.device_id if table is IosDevice else Device.id
        async with db.transaction() as session:
            await session.execute(update(table).where(key == device.id).values({column: value}))
        before = len(await events_of(db, "device_reauthenticated"))
        assert not await _write(db, read, device.id), column
        assert len(await events_of(db, "device_reauthenticated")) == before, column
        assert (await _binding(db, device.id)).topic != "guarded", column
        identifier = value if column == "identifier" else identifier
        fingerprint = value if column == "cert_fingerprint" else fingerprint
    # As read: written, with its event.
    read = await _read(db, fingerprint, serial, identifier)
    assert await _write(db, read, device.id)
    assert (await _binding(db, device.id)).topic == "guarded"
    assert len([e for e in await events_of(db, "device_reauthenticated") if e.device_id == device.id]) == 1


async def _read(db: Database, fingerprint: bytes, serial: str, identifier: str) -> Any:
    async with autocommit(db.engine) as conn:
        return await store_checkin_direct.checked_state(
            conn, fingerprint, serial, identifier, normalized_serial(serial)
        )


async def _write(db: Database, read: Any, device_id: int) -> bool:
    event_row = events.event_values(
        DEVICE_REAUTHENTICATED, device_id=device_id, identifier="x", cert_serial="1", identity_source="tls"
    )
    async with autocommit(db.engine) as conn:
        return await store_checkin_direct.authenticated_if_unchanged(
            conn, read, device={"name": "guarded"}, binding={"topic": "guarded"}, event=event_row
        )


async def _binding(db: Database, device_id: int) -> IosDevice:
    async with db.session() as session:
        row = await session.get(IosDevice, device_id)
        assert row is not None
        return row
