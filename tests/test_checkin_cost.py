"""Authenticate and TokenUpdate in Core statements (issue 12, check-in storms): a check-in writes
no ORM unit of work and only a few statements, and what the ORM's commit hooks did for it still
happens: a re-bound identity or a device enrolled again drops the cached binding at commit (here
and, over PostgreSQL NOTIFY, on the other replicas), the events keep their order."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from ios_support import Phone, new_phone
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mdm.config import Config
from mdm.core import users
from mdm.core.identity import BindingCache
from mdm.core.identity_invalidation import track_bindings
from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.ios import checkin
from mdm.ios.messages import load_plist, parse_checkin
from mdm.ios.plugin import service
from mdm.ios.service import IosService
from mdm.ios.state import BINDING_CHANNEL
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


def _fingerprint(phone: Phone) -> bytes:
    return hashlib.sha256(phone.cert.public_bytes(Encoding.DER)).digest()


async def _device(db: Database, udid: str) -> Device:
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == udid))
        assert device is not None
        return device


async def _event_types(db: Database, device_id: int) -> list[str]:
    async with db.session() as session:
        stmt = select(Event.type).where(Event.device_id == device_id).order_by(Event.id)
        return list((await session.scalars(stmt)).all())


@pytest.fixture
async def notifications(config: Config) -> AsyncIterator[list[str]]:
    """The payloads of ``NOTIFY mdm_ios_binding`` seen by another connection (PostgreSQL only)."""
    seen: list[str] = []
    if not config.database_url.startswith("postgresql"):
        yield seen
        return
    connection = await asyncpg.connect(config.database_url.replace("postgresql+asyncpg", "postgresql"))
    await connection.add_listener(BINDING_CHANNEL, lambda *args: seen.append(str(args[-1])))
    try:
        yield seen
    finally:
        await connection.close()


async def _heard(config: Config, notifications: list[str], device_id: int) -> bool:
    if not config.database_url.startswith("postgresql"):
        return True  # (SQLite: one process, nothing to tell)
    for _ in range(50):
        if any(str(device_id) in payload.split(",") for payload in notifications):
            return True
        await asyncio.sleep(0.02)
    return False


_IN_TEST: contextvars.ContextVar[bool] = contextvars.ContextVar("in_test", default=False)


async def _handle(svc: IosService, phone: Phone, message: dict[str, Any]) -> None:
    body, headers = phone.signed({"UDID": phone.udid, **message})
    identity = svc.resolver.from_signature(headers["Mdm-Signature"], body)
    await checkin.handle(svc, identity, parse_checkin(load_plist(body)))


async def test_storm_pair_runs_few_statements_and_no_unit_of_work(server: Server, db: Database) -> None:
    svc = service(server.ctx)
    phone = await new_phone(db, pki_services.ca(server.ctx))
    statements: list[str] = []
    flushes: list[int] = []

    def executed(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if _IN_TEST.get():  # (not the server's workers)
            statements.append(sql)

    def flushed(session: Session, *_args: Any) -> None:
        if _IN_TEST.get():
            flushes.append(1)

    engine = svc.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", executed)
    event.listen(Session, "before_flush", flushed)
    _IN_TEST.set(True)
    try:
        await _handle(svc, phone, phone.authenticate())
        authenticate = len(statements)
        await _handle(svc, phone, phone.token_update())
        paired = len(statements)
        await _handle(svc, phone, phone.authenticate())  # the same device again (after an outage)
    finally:
        _IN_TEST.set(False)
        event.remove(engine, "before_cursor_execute", executed)
        event.remove(Session, "before_flush", flushed)
    token_update = paired - authenticate
    again = len(statements) - paired
    # A new device without an enrollment: look-ups of its identity's binding and record with the
    # device and binding of its UDID and the enrollment it came from (by serial and by SCEP
    # challenge: one; none found), of the device alone; an INSERT each for the device, its binding
    # and its event, the certificate linked. The TokenUpdate: a read, two writes, its event.
    # (PostgreSQL reads the checked rows once more: first without locks, for the single guarded
    # statement of a device checking in again, ``checkin_authenticate_direct``.)
    postgres = db.engine.dialect.name == "postgresql"
    assert 0 < authenticate <= (7 if postgres else 6), statements[:authenticate]
    assert 0 < token_update <= 4, statements[authenticate:paired]
    # Again: its identity's binding and record with the device, its binding and the enrollment
    # look-up (one), the binding's update and the event.
    assert 0 < again <= 3, statements[paired:]
    if postgres:
        # The writes and the event are one statement (data-modifying CTEs): the TokenUpdate's
        # read and write; again, the read (the enrollment look-up joined in) and the write.
        assert token_update == 2, statements[authenticate:paired]
        assert again == 2, statements[paired:]
    assert flushes == []
    device = await _device(db, phone.udid)
    assert await _event_types(db, device.id) == [
        "device_enrolled",
        "push_token_updated",
        "device_reauthenticated",
    ]


async def test_a_new_identity_drops_the_old_binding_everywhere(
    ios: httpx.AsyncClient, server: Server, db: Database, config: Config, notifications: list[str]
) -> None:
    """The owner's new identity takes over the UDID: the old one is cut off at once, in every
    binding cache of this process and (NOTIFY) of the other replicas."""
    svc = service(server.ctx)
    async with db.transaction() as session:
        owner = (await users.create(session, "storm-owner")).id
    first = await new_phone(db, pki_services.ca(server.ctx), user_id=owner)
    await first.enroll(ios)
    device = await _device(db, first.udid)
    other = BindingCache(100, 60.0)  # another cache on the same engine (e.g. another listener's)
    track_bindings(svc.db.engine.sync_engine, other)
    other.put(_fingerprint(first), device.id, first.udid, "ok")
    assert svc.bindings.get(_fingerprint(first)) is not None
    notifications.clear()

    second = await new_phone(db, pki_services.ca(server.ctx), udid=first.udid, user_id=owner)
    response = await second.checkin(ios, second.authenticate())
    assert response.status_code == 200, response.text
    assert other.get(_fingerprint(first)) is None
    assert svc.bindings.get(_fingerprint(first)) is None
    assert await _heard(config, notifications, device.id)
    refused = await first.checkin(ios, first.token_update())
    assert refused.status_code == 400 and refused.json()["error"]["details"]["reason"] == "unbound"
    assert (await second.checkin(ios, second.token_update())).status_code == 200
    after = await _device(db, first.udid)
    assert (after.id, after.cert_serial, after.user_id) == (device.id, second.serial, owner)


async def test_enrolling_again_after_check_out_reports_the_status_first(
    ios: httpx.AsyncClient, server: Server, db: Database, config: Config, notifications: list[str]
) -> None:
    svc = service(server.ctx)
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    device = await _device(db, phone.udid)
    assert (await phone.checkin(ios, {"MessageType": "CheckOut", "Topic": "t"})).status_code == 200
    assert (await _device(db, phone.udid)).status == "unmanaged"
    other = BindingCache(100, 60.0)
    track_bindings(svc.db.engine.sync_engine, other)
    other.put(b"\x07" * 32, device.id, phone.udid, "unmanaged")
    notifications.clear()

    assert (await phone.checkin(ios, phone.authenticate(SerialNumber="C02STORM"))).status_code == 200
    again = await _device(db, phone.udid)
    assert (again.id, again.status, again.serial_number) == (device.id, "ok", "C02STORM")
    assert again.enrolled_at > device.enrolled_at
    assert other.get(b"\x07" * 32) is None
    assert await _heard(config, notifications, device.id)
    types = await _event_types(db, device.id)
    assert types[-2:] == ["device_status_changed", "device_enrolled"]
    async with db.session() as session:
        changed = await session.scalar(
            select(Event).where(Event.device_id == device.id, Event.type == "device_status_changed")
            .order_by(Event.id.desc()).limit(1)
        )  # fmt: skip
    assert changed is not None
    assert (changed.body["previous"], changed.body["status"], changed.body["reason"]) == (
        "unmanaged",
        "ok",
        "enrolled",
    )
