"""Authenticate cannot move a UDID bound to an active device to another identity, unless the new
identity came from the same owner's enrollment, from an enrollment an administrator made for that
very device, or the old binding has ended (checked out, wiped, removed, revoked, expired).
A refused takeover is a 400 that changes nothing, with a security event naming both identities."""

from __future__ import annotations

import plistlib
import uuid
from datetime import timedelta

import httpx
import pytest
from binding_support import device_of, enrollment_identity, events_of, rejections
from enroll_support import APNS_TOML
from ios_support import Phone, new_phone, queue_command, snapshot
from sqlalchemy import select, update

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device, User, utcnow
from mdm.pki import services as pki_services
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server


@pytest.fixture
def extra_config() -> str:
    # A long binding cache and a slow last_seen flush: neither may hide or add a change.
    return APNS_TOML + "\n[ios]\nbinding_cache_seconds = 300\nlast_seen_flush_seconds = 300\n"


def _udid() -> str:
    return uuid.uuid4().hex.upper() + "0000AAAA"


async def _user(db: Database, name: str) -> int:
    async with db.transaction() as session:
        user = User(name=name)
        session.add(user)
        await session.flush()
        return user.id


def _offered(response: httpx.Response) -> str | None:
    assert response.status_code == 200, response.text
    return plistlib.loads(response.content)["CommandUUID"] if response.content else None


async def _refused(ios: httpx.AsyncClient, db: Database, intruder: Phone, bound: Phone) -> None:
    """Authenticate with ``intruder`` for ``bound``'s UDID: 400, no change, one event naming both."""
    before = await snapshot(db)
    seen = len(await rejections(db))
    response = await intruder.checkin(ios, intruder.authenticate(DeviceName="not yours"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["reason"] == "takeover"
    assert await snapshot(db) == before
    events = await rejections(db)
    assert len(events) == seen + 1
    event = events[-1]
    assert event.body["reason"] == "takeover" and event.severity == "warning"
    assert event.device_id == (await device_of(db, bound.udid)).id
    assert event.body["serial"] == intruder.serial and event.body["bound_serial"] == bound.serial


async def test_an_identity_from_another_users_link_cannot_take_over(
    api: httpx.AsyncClient, ios: httpx.AsyncClient, config: Config, db: Database
) -> None:
    udid = _udid()
    victim, _ = await enrollment_identity(api, config, "alice", udid)
    await victim.enroll(ios)
    device = await device_of(db, udid)
    # Anyone's unused one-time link gives an identity our CA issued...
    attacker, _ = await enrollment_identity(api, config, "mallory", udid)
    await _refused(ios, db, attacker, victim)
    # ... which receives none of the device's commands; the device keeps them.
    guid = await queue_command(db, device.id, {"RequestType": "DeviceLock"}, type_="Block")
    assert (await attacker.report(ios)).status_code == 400
    assert _offered(await victim.report(ios)) == guid
    assert (await device_of(db, udid)).cert_serial == victim.serial


async def test_the_same_owners_new_enrollment_takes_over(
    api: httpx.AsyncClient, ios: httpx.AsyncClient, config: Config, db: Database
) -> None:
    udid = _udid()
    old, _ = await enrollment_identity(api, config, "alice", udid)
    await old.enroll(ios)
    device = await device_of(db, udid)
    new, created = await enrollment_identity(api, config, "alice", udid)
    assert (await new.checkin(ios, new.authenticate())).status_code == 200
    after = await device_of(db, udid)
    assert (after.id, after.user_id, after.cert_serial) == (device.id, device.user_id, new.serial)
    assert after.attributes["enrollment_id"] == created["id"]
    assert (await old.report(ios)).status_code == 400
    guid = await queue_command(db, device.id, {"RequestType": "DeviceLock"}, type_="Block")
    assert _offered(await new.report(ios)) == guid
    assert len(await events_of(db, "device_reauthenticated")) == 1


async def test_an_administrators_enrollment_for_the_device_takes_over(
    api: httpx.AsyncClient, ios: httpx.AsyncClient, config: Config, db: Database
) -> None:
    udid, other_udid = _udid(), _udid()
    victim, _ = await enrollment_identity(api, config, "alice", udid)
    await victim.enroll(ios)
    other, _ = await enrollment_identity(api, config, "carol", other_udid)
    await other.enroll(ios)
    device = await device_of(db, udid)
    # bob's ordinary link: refused.
    plain, _ = await enrollment_identity(api, config, "bob", udid)
    await _refused(ios, db, plain, victim)
    # A link an administrator made for this device (here for another user).
    targeted, created = await enrollment_identity(api, config, "bob", udid, device_id=device.id)
    shown = (await api.get(f"/api/v1/enrollments/{created['id']}")).json()
    assert shown["for_device_id"] == device.id
    # It is for this device only.
    await _refused(ios, db, Phone(other_udid, targeted.cert, targeted.key, targeted.serial), other)
    assert (await targeted.checkin(ios, targeted.authenticate())).status_code == 200
    after = await device_of(db, udid)
    assert after.id == device.id and after.cert_serial == targeted.serial
    async with db.session() as session:
        bob = await session.scalar(select(User.id).where(User.name == "bob"))
    assert bob is not None and after.user_id == bob  # re-enrolled for bob
    assert (await victim.report(ios)).status_code == 400
    # Unknown device: 404, nothing created.
    body = {"platform": "ios", "user": "bob", "device_id": 999999}
    missing = await api.post("/api/v1/enrollments", json=body)
    assert missing.status_code == 404, missing.text


async def test_certificates_issued_to_users(ios: httpx.AsyncClient, server: Server, db: Database) -> None:
    """Identities not from an enrollment link: only one issued to the device's owner may take over."""
    alice, mallory = await _user(db, "alice"), await _user(db, "mallory")
    victim = await new_phone(db, pki_services.ca(server.ctx), user_id=alice)
    await victim.enroll(ios)
    for owner in (mallory, None):
        stranger = await new_phone(db, pki_services.ca(server.ctx), udid=victim.udid, user_id=owner)
        await _refused(ios, db, stranger, victim)
    same = await new_phone(db, pki_services.ca(server.ctx), udid=victim.udid, user_id=alice)
    assert (await same.checkin(ios, same.authenticate())).status_code == 200
    # A device without an owner: no certificate is "the owner's".
    orphan = await new_phone(db, pki_services.ca(server.ctx))
    await orphan.enroll(ios)
    for owner in (mallory, None):
        stranger = await new_phone(db, pki_services.ca(server.ctx), udid=orphan.udid, user_id=owner)
        await _refused(ios, db, stranger, orphan)


@pytest.mark.parametrize("ending", ["checked_out", "wiped", "removed", "revoked", "expired"])
async def test_an_ended_binding_may_move(
    api: httpx.AsyncClient, ios: httpx.AsyncClient, server: Server, db: Database, ending: str
) -> None:
    alice, mallory = await _user(db, "alice"), await _user(db, "mallory")
    victim = await new_phone(db, pki_services.ca(server.ctx), user_id=alice)
    await victim.enroll(ios)
    device = await device_of(db, victim.udid)
    if ending == "checked_out":
        assert (await victim.checkin(ios, {"MessageType": "CheckOut", "Topic": "t"})).status_code == 200
    elif ending in ("wiped", "removed"):
        payload = {"RequestType": "EraseDevice"} if ending == "wiped" else {
            "RequestType": "RemoveProfile", "Identifier": "com.example.mdm"
        }
        guid = await queue_command(db, device.id, payload, type_="Wipe" if ending == "wiped" else "Remove")
        assert _offered(await victim.report(ios)) == guid
        assert (await victim.report(ios, "Acknowledged", guid)).status_code == 200
    elif ending == "revoked":
        revoked = await api.post(f"/api/v1/certificates/{victim.serial}/revoke", json={})
        assert revoked.status_code == 200, revoked.text
    else:  # the clock passed the bound certificate's notAfter (the expiry worker has not run yet)
        past = utcnow() - timedelta(minutes=1)
        async with db.transaction() as session:
            await session.execute(update(Device).where(Device.id == device.id).values(cert_not_after=past))
            await session.execute(
                update(IssuedCertificateRecord)
                .where(IssuedCertificateRecord.serial == victim.serial)
                .values(not_after=past)
            )
    newcomer = await new_phone(db, pki_services.ca(server.ctx), udid=victim.udid, user_id=mallory)
    response = await newcomer.checkin(ios, newcomer.authenticate())
    assert response.status_code == 200, response.text
    after = await device_of(db, victim.udid)
    assert (after.id, after.status, after.cert_serial) == (device.id, "ok", newcomer.serial)
    assert await rejections(db) == []
